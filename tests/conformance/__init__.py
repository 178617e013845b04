"""Protocol conformance: real peers (the ocpp library ChargePoint, Mosquitto, pymodbus) against the gateways."""
