"""`python -m voltcloud_gateways.gbt32960 --config gateway.json`: runs the GB/T 32960 gateway.

The config file (JSON; keys in docs/protocols/gbt32960.md)::

    {"gateway_id": "gw-gbt-1", "platform": "127.0.0.1:50051", "token": "<gateway bearer token>",
     "listen": "0.0.0.0:32960", "state_dir": "data/gw-gbt-1",
     "platform_logins": {"relay01": "secret"}, "accept_unknown_vins": false}

VINs are resolved by the platform (`IngestService.ResolveVehicles`, cached; see `directory.py`); the optional
`vehicles` map (VIN -> vehicle id) overrides it for the VINs it names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from voltcloud.api.v1 import ingest_pb2
from voltcloud_gateways.gbt32960.config import GatewayConfig
from voltcloud_gateways.gbt32960.directory import PlatformDirectory
from voltcloud_gateways.gbt32960.server import Gbt32960Gateway, run_gateway
from voltcloud_gateways.uplink import UplinkClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args()
    config = GatewayConfig.from_dict(json.loads(args.config.read_text()))
    logging.basicConfig(level=logging.INFO)
    config.state_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        uplink = UplinkClient(
            config.platform,
            gateway_id=config.gateway_id,
            kind=ingest_pb2.GATEWAY_KIND_GBT32960,
            token=config.token,
            station_ids=[],
            outbox_path=config.state_dir / "outbox.db",
        )
        directory = PlatformDirectory(
            config.platform,
            lambda: (("authorization", f"Bearer {config.token}"),),
            config.gateway_id,
            overrides=config.vehicles,
        )
        gateway = Gbt32960Gateway(uplink, directory, config)
        try:
            await run_gateway(gateway, uplink)
        finally:
            await directory.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
