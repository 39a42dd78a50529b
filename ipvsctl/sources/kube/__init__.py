"""The Kubernetes API as a source: settings (config), list/watch client, reflector loop, World feeder (source)."""
