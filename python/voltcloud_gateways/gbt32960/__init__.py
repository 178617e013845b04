"""GB/T 32960.3 gateway for vehicle terminals (2016 `##` and 2025 `$$` editions): a sans-IO codec
(`frame`, `fields`, `realtime`, `codec`) and an asyncio TCP server (`server`) on the shared uplink."""
