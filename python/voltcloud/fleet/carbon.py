"""Carbon reduction of electric driving against a gasoline car, from the energy a vehicle took on.

The energy delivered to a vehicle (swaps and charging, Wh) drives it `energy / consumption` km (its registered
consumption, Wh/km). A gasoline car driving those km burns `km x L/100 km / 100` litres, emitting `litres x kg
CO2/L`; the grid emitted `kWh x kg CO2/kWh` to make the electricity. The reduction is the difference (it may be
negative for a very inefficient vehicle). All factors live here; docs/fleets.md names their sources:

- GASOLINE_L_PER_100KM: 10.69 L/100 km = 22.0 miles per US gallon, the average fuel economy of a typical
  passenger vehicle, US EPA, "Greenhouse Gas Emissions from a Typical Passenger Vehicle" (EPA-420-F-18-008);
- GASOLINE_G_CO2_PER_L: 2,348 g/L = 8,887 g CO2 per US gallon (3.78541 L) of gasoline, same EPA fact sheet;
- GRID_G_CO2_PER_KWH: 570.3 g/kWh = 0.5703 t CO2/MWh, China's national average power-grid emission factor for
  2022, published by the Ministry of Ecology and Environment and the National Bureau of Statistics (2024).
"""

from __future__ import annotations

from dataclasses import dataclass

GASOLINE_L_PER_100KM = 10.69
GASOLINE_G_CO2_PER_L = 2348.0
GRID_G_CO2_PER_KWH = 570.3


@dataclass(frozen=True)
class Carbon:
    electric_distance_m: int  # what the energy drives the vehicle
    co2_avoided_g: int  # gasoline car's emissions for that distance minus the grid's for the energy


def carbon_of(energy_wh: int, consumption_wh_per_km: int) -> Carbon:
    if energy_wh <= 0 or consumption_wh_per_km <= 0:
        return Carbon(0, 0)
    km = energy_wh / consumption_wh_per_km
    gasoline_g = km * GASOLINE_L_PER_100KM / 100 * GASOLINE_G_CO2_PER_L
    grid_g = energy_wh / 1000 * GRID_G_CO2_PER_KWH
    return Carbon(round(km * 1000), round(gasoline_g - grid_g))
