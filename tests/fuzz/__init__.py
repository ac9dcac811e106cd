"""The bounded fuzz suite (issue 12): hypothesis properties over the wire parsers, the normalizers and the loaders."""
