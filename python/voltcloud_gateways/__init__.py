"""VoltCloud station gateways: hardware protocols translated to and from the platform's gRPC API."""
