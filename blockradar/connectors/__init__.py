"""PBX connectors: one module per PBX transport, one per event normalizer, and the shared contract."""
