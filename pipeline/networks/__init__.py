"""Networks of the UNet family (filled in by the networks module set)."""
