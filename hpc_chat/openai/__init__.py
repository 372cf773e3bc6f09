"""OpenAI's JSON, built in one place: batch request and output lines (:mod:`.batch`)."""
