"""HEP: the carrier's own SIP responses, mirrored by the PBX as HEPv3 (issue 15)."""
