"""Globus Compute: the SDK's client, and a site's endpoint config (the executor that runs the
chat function there is the driver's: :mod:`hpc_chat.driver.executors.globus`)."""
