"""The gRPC service definition and its generated modules (`make protos` regenerates them; never edit them by hand)."""
