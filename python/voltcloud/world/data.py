"""Static reference tables for the world generator: cities, vehicle models, names.

Nothing here is random; the generator draws from these tables with its seeded generator.
"""

from __future__ import annotations

from typing import NamedTuple


class CityRow(NamedTuple):
    name: str
    lat: float
    lng: float
    population_m: float  # urban population, millions (sets the weight and the radius)


# ~40 large Chinese cities, ordered by weight (Shanghai first: the demo city). Coordinates are the
# city centres (people's squares / government seats) to ~0.01 degree.
CITIES: tuple[CityRow, ...] = (
    CityRow("Shanghai", 31.2304, 121.4737, 24.9),
    CityRow("Beijing", 39.9042, 116.4074, 21.9),
    CityRow("Chengdu", 30.5728, 104.0668, 16.0),
    CityRow("Guangzhou", 23.1291, 113.2644, 18.7),
    CityRow("Shenzhen", 22.5431, 114.0579, 17.6),
    CityRow("Chongqing", 29.5630, 106.5516, 15.8),
    CityRow("Tianjin", 39.3434, 117.3616, 13.9),
    CityRow("Wuhan", 30.5928, 114.3055, 13.6),
    CityRow("Xi'an", 34.3416, 108.9398, 13.0),
    CityRow("Suzhou", 31.2990, 120.5853, 12.9),
    CityRow("Zhengzhou", 34.7466, 113.6253, 12.8),
    CityRow("Hangzhou", 30.2741, 120.1551, 12.4),
    CityRow("Shijiazhuang", 38.0428, 114.5149, 11.2),
    CityRow("Dongguan", 23.0207, 113.7518, 10.5),
    CityRow("Changsha", 28.2282, 112.9388, 10.4),
    CityRow("Qingdao", 36.0671, 120.3826, 10.3),
    CityRow("Foshan", 23.0215, 113.1214, 9.6),
    CityRow("Hefei", 31.8206, 117.2272, 9.6),
    CityRow("Ningbo", 29.8683, 121.5440, 9.6),
    CityRow("Wenzhou", 27.9943, 120.6994, 9.6),
    CityRow("Nanjing", 32.0603, 118.7969, 9.4),
    CityRow("Jinan", 36.6512, 117.1201, 9.4),
    CityRow("Shenyang", 41.8057, 123.4315, 9.1),
    CityRow("Changchun", 43.8171, 125.3235, 9.1),
    CityRow("Xuzhou", 34.2044, 117.2859, 9.0),
    CityRow("Nanning", 22.8170, 108.3665, 8.9),
    CityRow("Kunming", 24.8801, 102.8329, 8.5),
    CityRow("Fuzhou", 26.0745, 119.2965, 8.4),
    CityRow("Harbin", 45.8038, 126.5350, 7.8),
    CityRow("Dalian", 38.9140, 121.6147, 7.5),
    CityRow("Wuxi", 31.4912, 120.3119, 7.5),
    CityRow("Nanchang", 28.6820, 115.8579, 6.4),
    CityRow("Guiyang", 26.6470, 106.6302, 6.0),
    CityRow("Taiyuan", 37.8706, 112.5489, 5.4),
    CityRow("Xiamen", 24.4798, 118.0894, 5.3),
    CityRow("Changzhou", 31.8107, 119.9741, 5.3),
    CityRow("Lanzhou", 36.0611, 103.8343, 4.4),
    CityRow("Urumqi", 43.8256, 87.6168, 4.1),
    CityRow("Hohhot", 40.8424, 111.7490, 3.5),
    CityRow("Haikou", 20.0440, 110.1999, 2.9),
    CityRow("Yinchuan", 38.4872, 106.2309, 2.9),
    CityRow("Zhuhai", 22.2710, 113.5767, 2.5),
    CityRow("Xining", 36.6171, 101.7782, 2.5),
    CityRow("Lhasa", 29.6520, 91.1721, 0.9),
)


class ModelRow(NamedTuple):
    name: str
    pack_type: int  # 0: fixed battery (no swap); else PackType
    connector_mask: int  # OR of 1 << ConnectorStandard
    usable_capacity_wh: int
    consumption_wh_per_km: int
    max_dc_power_w: int  # 0: AC only
    wmi: str  # VIN world manufacturer identifier (3 chars)
    private_weight: float
    fleet_weight: float


_DCAC = (1 << 1) | (1 << 2)  # GB/T DC + GB/T AC
_AC = 1 << 2

VEHICLE_MODELS: tuple[ModelRow, ...] = (
    ModelRow("NIO ET5 75kWh", 1, _DCAC, 72_000, 155, 140_000, "LJ1", 10.0, 2.0),
    ModelRow("NIO ES6 100kWh", 2, _DCAC, 95_000, 175, 180_000, "LJ1", 7.0, 1.0),
    ModelRow("NIO ET7 150kWh", 3, _DCAC, 142_000, 165, 180_000, "LJ1", 2.0, 0.0),
    ModelRow("NIO ES8 100kWh", 2, _DCAC, 95_000, 200, 180_000, "LJ1", 3.0, 0.5),
    ModelRow("GAC Aion S Swap", 1, _DCAC, 70_000, 135, 100_000, "LMG", 3.0, 16.0),
    ModelRow("BYD Qin PLUS EV", 0, _DCAC, 57_000, 120, 70_000, "LGX", 12.0, 15.0),
    ModelRow("BYD Han EV", 0, _DCAC, 85_000, 140, 120_000, "LGX", 8.0, 3.0),
    ModelRow("BYD e6 Taxi", 0, _DCAC, 80_000, 165, 60_000, "LGX", 0.0, 18.0),
    ModelRow("Tesla Model 3 RWD", 0, _DCAC, 60_000, 125, 170_000, "LRW", 10.0, 2.0),
    ModelRow("Tesla Model Y", 0, _DCAC, 75_000, 145, 250_000, "LRW", 14.0, 2.0),
    ModelRow("XPeng P7", 0, _DCAC, 80_000, 135, 175_000, "L1N", 6.0, 1.0),
    ModelRow("Zeekr 001", 0, _DCAC, 100_000, 170, 200_000, "L6T", 5.0, 2.0),
    ModelRow("Geely Geometry A", 0, _DCAC, 60_000, 130, 80_000, "L6T", 2.0, 8.0),
    ModelRow("BMW iX3", 0, _DCAC, 74_000, 170, 150_000, "LBV", 3.0, 0.0),
    ModelRow("Wuling Hongguang Mini EV", 0, _AC, 13_900, 90, 0, "LZW", 10.0, 0.0),
)

OPERATOR_NAMES: tuple[str, ...] = (
    "VoltSwap Energy",
    "Jiangnan eCharge",
    "Huayu Grid Services",
    "Dongfang Swap Power",
    "Xinyuan Charging",
    "Tianyi Mobility Energy",
    "Lanhai eMobility",
    "Beichen Power Network",
    "Zhongxing Charge Link",
    "Nanfeng New Energy",
    "Hengtong Swap",
    "Qingyun Charging",
)

FLEET_NAMES: tuple[str, ...] = (
    "Pujiang Taxi Group",
    "Eastern Ride-Hailing",
    "Swift Cargo Logistics",
    "Golden Bay Car Rental",
    "Yangtze Corporate Mobility",
    "Silk Road Express",
    "Harbour City Cabs",
    "Green Leaf Car Share",
    "Red Lantern Chauffeurs",
    "Jade Dragon Delivery",
    "Sunrise Airport Shuttle",
    "Peony Municipal Fleet",
    "Lotus Ride",
    "Summit Van Lines",
    "Blue River Taxi",
    "Phoenix Rental",
)

SUB_FLEET_NAMES: tuple[str, ...] = ("North Depot", "South Depot", "Airport", "Night Shift", "East Depot")

SURNAMES: tuple[str, ...] = (
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou",
    "Xu", "Sun", "Ma", "Zhu", "Hu", "Guo", "He", "Lin", "Gao", "Luo",
    "Zheng", "Liang", "Xie", "Song", "Tang", "Han", "Feng", "Deng", "Cao", "Peng",
)  # fmt: skip

GIVEN_NAMES: tuple[str, ...] = (
    "Wei", "Fang", "Na", "Min", "Jing", "Lei", "Jun", "Yang", "Yong", "Yan",
    "Jie", "Tao", "Ming", "Chao", "Xiuying", "Xia", "Ping", "Gang", "Hui", "Lina",
    "Haoran", "Zihan", "Yuxuan", "Xinyi", "Yichen", "Zhiwei", "Meiling", "Jianguo", "Xiaoling", "Bo",
    "Qiang", "Dan", "Kai", "Rui", "Shu", "Ting", "Wen", "Xin", "Yu", "Zhen",
)  # fmt: skip

ROAD_CLASS_NAMES: tuple[str, ...] = ("motorway", "arterial", "urban", "local")
