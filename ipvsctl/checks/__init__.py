"""Active health checks of real servers for the standalone agent (``agent --manifests``)."""
