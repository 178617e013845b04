"""`python -m voltcloud_gateways.ocpp --config gateway.json`: runs the OCPP central system gateway.

The config file (JSON)::

    {"gateway_id": "gw-ocpp-1", "platform": "127.0.0.1:50051", "token": "<gateway bearer token>",
     "listen": "0.0.0.0:9000", "state_dir": "data/gw-ocpp-1", "heartbeat_interval_s": 60,
     "charge_points": {"st-000013-c1": {"station_id": "st-000013", "password": "...",
                                        "connectors": {"1": "cn-0000001"}}}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from voltcloud.api.v1 import ingest_pb2
from voltcloud_gateways.ocpp.central import ChargePointConfig, OcppState
from voltcloud_gateways.ocpp.server import OcppGateway, run_gateway
from voltcloud_gateways.uplink import UplinkClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args()
    config = json.loads(args.config.read_text())
    logging.basicConfig(level=logging.INFO)
    state_dir = Path(config.get("state_dir", f"data/{config['gateway_id']}"))
    state_dir.mkdir(parents=True, exist_ok=True)
    charge_points = [ChargePointConfig.from_dict(k, v) for k, v in config["charge_points"].items()]
    host, _, port = str(config.get("listen", "0.0.0.0:9000")).rpartition(":")

    async def run() -> None:
        uplink = UplinkClient(
            config["platform"],
            gateway_id=config["gateway_id"],
            kind=ingest_pb2.GATEWAY_KIND_OCPP,
            token=config["token"],
            station_ids=sorted({cp.station_id for cp in charge_points}),
            outbox_path=state_dir / "outbox.db",
        )
        gateway = OcppGateway(
            uplink,
            charge_points,
            OcppState(state_dir / "ocpp.db"),
            host=host,
            port=int(port),
            heartbeat_interval_s=int(config.get("heartbeat_interval_s", 60)),
        )
        await run_gateway(gateway)

    asyncio.run(run())


if __name__ == "__main__":
    main()
