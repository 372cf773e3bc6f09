"""Globus Compute: run the chat function on a site's endpoint, and write that endpoint's config."""
