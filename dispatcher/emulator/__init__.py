"""An emulator of the Messangi Outbound SMS gateway (SPEC §8)."""
