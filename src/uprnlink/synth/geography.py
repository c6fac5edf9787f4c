"""The fictional local authority: output areas to wards, streets, postcodes and UPRN'd addresses."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import polars as pl

from uprnlink.synth.draws import uniforms

LAD_CODE = "E08000999"
LAD_NAME = "Calderbridge"
TOWN = "CALDERBRIDGE"

DETACHED, SEMI, TERRACE, FLAT, BEDSIT, CARE_HOME, HOSTEL = range(7)
CLASS_CODES = ("RD02", "RD03", "RD04", "RD06", "RH02", "RI01", "RI02")
COMMUNAL_KINDS = frozenset({CARE_HOME, HOSTEL})

OWNER, PRIVATE_RENT, SOCIAL_RENT = range(3)
TENURE_NAMES = ("owner_occupied", "private_rented", "social_rented")

_POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
_UNITS_PER_SECTOR = len(_POSTCODE_LETTERS) ** 2
_DISTRICTS = (
    [f"LS{i}" for i in range(1, 30)]
    + [f"BD{i}" for i in range(1, 24)]
    + [f"WF{i}" for i in range(1, 18)]
    + [f"HX{i}" for i in range(1, 8)]
    + [f"HD{i}" for i in range(1, 10)]
)
_CENTRE_E, _CENTRE_N, _CELL_M = 430_000, 433_500, 700

_STREET_WORDS_TEXT = """
Oak Ash Elm Beech Birch Alder Rowan Willow Holly Hazel Cedar Larch Maple Poplar Sycamore
Chestnut Hawthorn Laurel Juniper Yew Linden Thorn Fern Heather Bracken Moss Primrose Bluebell
Clover Daisy Lilac Laburnum Lavender Meadow Orchard Garden Park Field Mill Church Chapel School
Station Bridge Market Castle Abbey Priory Grange Manor Hall Court Lodge Farm Croft Moor Fell
Dale Beck Brook Ings Carr Holme Wharf Canal River Valley Hill Crest Ridge Bank Cliff Green
Common Cross Well Spring Mount Heath Forest Wood Grove Spinney Copse Woodland Lea Leys Acre
Hollin Royd Shaw Clough Stubbing Nab Scar Knoll Tor Rigg Howe Thwaite Garth Wray Booth Ackroyd
Armitage Barraclough Beaumont Bentley Blenheim Bramley Brunswick Buckingham Cambridge Carlton
Cavendish Chatsworth Clarence Clifton Cobden Cromwell Derby Devonshire Dudley Egerton
Fitzwilliam Gladstone Grosvenor Hanover Harewood Kensington Lansdowne Lister Marlborough
Melbourne Milton Nelson Newton Norfolk Oxford Palmerston Peel Portland Raglan Regent Richmond
Rosebery Russell Salisbury Stanley Sutherland Trafalgar Victoria Waterloo Wellington
Westminster Windsor York Albion Alexandra Albert Arthur Edward George Henry Louis Mary Queen
King Prince Princess Duke Earl Ashfield Broomfield Fairfield Springfield Westfield Eastfield
Northfield Southfield Longfield Whitefield Greenfield Highfield Lowfield Moorfield Brookfield
Larkfield Oakfield Summerfield Sunnybank Woodlands Rosedale Ferndale Glendale Hillside Parkside
Riverside Lakeside Brookside Meadowside Westbourne Eastbourne Ashbourne Holbeck Kirkstall
Headingley Roundhay Gledhow Chapeltown Harehills Beeston Hunslet Armley Bramley Pudsey Farsley
Rodley Calverley Horsforth Otley Ilkley Wetherby Tadcaster Garforth Rothwell Morley Batley
Dewsbury Ossett Wakefield Normanton Castleford Pontefract Knottingley Selby Goole Skipton
Keighley Bingley Shipley Baildon Guiseley Yeadon Rawdon Menston Burley Addingham Silsden
Haworth Oxenhope Cullingworth Denholme Thornton Queensbury Clayton Allerton Heaton Manningham
Girlington Lidget Wibsey Buttershaw Wyke Low High Upper Nether Old New Far Near
"""
_STREET_WORDS = tuple(_STREET_WORDS_TEXT.split())
_STREET_SUFFIXES = (
    ("Road", 14),
    ("Street", 12),
    ("Avenue", 8),
    ("Lane", 8),
    ("Close", 7),
    ("Drive", 6),
    ("Grove", 6),
    ("Crescent", 5),
    ("Terrace", 5),
    ("Way", 4),
    ("Gardens", 4),
    ("Place", 3),
    ("Mount", 3),
    ("View", 3),
    ("Walk", 2),
    ("Rise", 2),
    ("Court", 2),
    ("Square", 1),
    ("Fold", 2),
    ("Mews", 1),
    ("Row", 1),
    ("Vale", 1),
)
_BLOCK_SUFFIXES = ("Court", "House", "Heights", "Point", "Tower", "Mansions", "Lodge", "Place")
_CARE_SUFFIXES = (
    "Care Home",
    "Nursing Home",
    "House Care Home",
    "Lodge Care Home",
    "Grange Nursing Home",
)
_HOSTEL_NAMES = (
    "{w} House Hostel",
    "{w} Foyer",
    "Salvation Army {w} Lodge",
    "{w} Court Supported Housing",
)
_LOCALITY_FIRST_TEXT = """
Ash Beck Birk Black Brad Bram Brig Broad Calder Carl Chap Clay Cold Cross Dal Den Ecc Farn Gild
Green Hal Har Hay Heck Holm Horn Kirk Lang Ley Lin Low Mars Mean Mir Moor Nether Nor Ock Ouse
Red Rip Rom Ros Scar Shel Skel South Stan Sut Thorn Thurn Tod Ure Wal Wes Whin Wool Wray Yar
"""
_LOCALITY_FIRST = tuple(_LOCALITY_FIRST_TEXT.split())
_LOCALITY_SECOND = (
    "ley",
    "field",
    "thorpe",
    "by",
    "ton",
    "worth",
    "holme",
    "bridge",
    "wood",
    "well",
    "hurst",
    "dale",
    "stead",
    "croft",
    "bank",
    "moor",
    "ford",
    "garth",
    "hill",
    "royd",
)


@dataclass(frozen=True)
class Geography:
    """Every address (one row per UPRN) and every LSOA of the synthetic local authority."""

    addresses: pl.DataFrame
    lsoas: pl.DataFrame


def _weighted(rng: random.Random, items: tuple[tuple[int, float], ...]) -> int:
    r = rng.random() * sum(w for _, w in items)
    for v, w in items:
        r -= w
        if r < 0:
            return v
    return items[-1][0]


_BEDROOMS = {
    DETACHED: ((3, 0.3), (4, 0.5), (5, 0.2)),
    SEMI: ((2, 0.2), (3, 0.65), (4, 0.15)),
    TERRACE: ((2, 0.45), (3, 0.45), (4, 0.1)),
    FLAT: ((1, 0.45), (2, 0.45), (3, 0.1)),
}
_BAND_BASE = {DETACHED: 4, SEMI: 2, TERRACE: 1, FLAT: 1, BEDSIT: 0}
_SOCIAL_BY_DECILE = (0.42, 0.33, 0.25, 0.19, 0.14, 0.1, 0.075, 0.05, 0.035, 0.025)
_SOCIAL_KIND = {DETACHED: 0.05, SEMI: 0.9, TERRACE: 1.1, FLAT: 1.5}


def _stock_exprs() -> dict[str, pl.Expr]:
    """Bedrooms, council tax band and first tenure of each address, from its kind and decile."""
    kind, decile = pl.col("kind"), pl.col("decile")
    u = pl.col("u_bed")
    bedrooms = pl.lit(0)
    for k, table in _BEDROOMS.items():
        cuts: list[tuple[float, int]] = []
        cum = 0.0
        for value, w in table[:-1]:
            cum += w
            cuts.append((cum, value))
        chain = pl.lit(table[-1][0])
        for cut, value in reversed(cuts):
            chain = pl.when(u < cut).then(pl.lit(value)).otherwise(chain)
        bedrooms = pl.when(kind == k).then(chain).otherwise(bedrooms)
    bedrooms = pl.when(kind == BEDSIT).then(pl.lit(1)).otherwise(bedrooms)
    shift = decile.replace_strict({d: (d - 4) // 3 for d in range(1, 11)}, return_dtype=pl.Int64)
    noise = (
        pl.when(pl.col("u_band") < 0.15).then(-1).when(pl.col("u_band") < 0.3).then(1).otherwise(0)
    )
    base = kind.replace_strict(_BAND_BASE, default=2, return_dtype=pl.Int64)
    band_idx = (base + shift + noise).clip(0, 7)
    band = band_idx.replace_strict(dict(enumerate("ABCDEFGH")), return_dtype=pl.Utf8)
    social = decile.replace_strict(
        dict(enumerate(_SOCIAL_BY_DECILE, start=1)), return_dtype=pl.Float64
    ) * kind.replace_strict(_SOCIAL_KIND, default=0.0, return_dtype=pl.Float64)
    private = (0.3 - 0.024 * (decile.cast(pl.Float64) - 1)) * pl.when(kind == FLAT).then(
        1.5
    ).otherwise(1.0)
    tenure = (
        pl.when(kind == BEDSIT)
        .then(pl.lit(PRIVATE_RENT))
        .when(pl.col("u_social") < social)
        .then(pl.lit(SOCIAL_RENT))
        .when(pl.col("u_private") < private)
        .then(pl.lit(PRIVATE_RENT))
        .otherwise(pl.lit(OWNER))
    )
    communal = kind.is_in(list(COMMUNAL_KINDS))
    return {
        "bedrooms": pl.when(communal).then(pl.lit(0)).otherwise(bedrooms).cast(pl.Int8),
        "band": pl.when(communal).then(None).otherwise(band),
        "stock_tenure": pl.when(communal).then(None).otherwise(tenure).cast(pl.Int8),
    }


def _street_kind(rng: random.Random, decile: int) -> str:
    dep = (10 - decile) / 9.0
    items = (  # dwelling shares divided by the mean dwellings per street of each kind
        ("terrace", (0.25 + 0.2 * dep) / 40),
        ("semi", (0.34 - 0.06 * dep) / 25),
        ("detached", (0.22 - 0.19 * dep) / 15),
        ("block", (0.15 + 0.06 * dep) / 48),
    )
    r = rng.random() * sum(w for _, w in items)
    for k, w in items:
        r -= w
        if r < 0:
            return k
    return "semi"


class _Builder:
    """Accumulates address rows in street order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cols: dict[str, list[object]] = {
            k: []
            for k in (
                "uprn",
                "kind",
                "capacity",
                "lsoa_idx",
                "street_id",
                "sub_building",
                "building_name",
                "number",
                "street",
                "locality",
                "easting",
                "northing",
            )
        }
        self.counter = {
            11: 10_000_000_000 + rng.randrange(5_000_000),
            12: 100_000_000_000 + rng.randrange(5_000_000),
        }
        self.street_id = 0

    def add(
        self,
        *,
        kind: int,
        lsoa: int,
        decile: int,
        digits: int,
        sub: str,
        building: str,
        number: str,
        street: str,
        locality: str,
        e: int,
        n: int,
        capacity: int = 0,
    ) -> None:
        rng = self.rng
        self.counter[digits] += 1 + (rng.randrange(4) if rng.random() < 0.3 else 0)
        c = self.cols
        c["uprn"].append(self.counter[digits])
        c["kind"].append(kind)
        c["capacity"].append(capacity)
        c["lsoa_idx"].append(lsoa)
        c["street_id"].append(self.street_id)
        c["sub_building"].append(sub)
        c["building_name"].append(building)
        c["number"].append(number)
        c["street"].append(street)
        c["locality"].append(locality)
        c["easting"].append(e)
        c["northing"].append(n)


def _street_name(rng: random.Random, used: set[str]) -> str:
    suffixes = tuple((i, float(w)) for i, (_, w) in enumerate(_STREET_SUFFIXES))
    for _ in range(200):
        name = f"{rng.choice(_STREET_WORDS)} {_STREET_SUFFIXES[_weighted(rng, suffixes)][0]}"
        if name not in used:
            used.add(name)
            return name
    name = f"{rng.choice(_STREET_WORDS)} {rng.choice(_STREET_WORDS)} Road"
    used.add(name)
    return name


def _build_lsoa(
    b: _Builder,
    lsoa: int,
    decile: int,
    target: int,
    locality: str,
    used: set[str],
    cell: tuple[int, int],
    communal: list[tuple[int, int]],
) -> None:
    """Streets of one LSOA until `target` dwellings exist, then its communal establishments."""
    rng = b.rng
    dep = (10 - decile) / 9.0
    made = 0
    street = ""
    number = 0
    e0 = n0 = 0
    de = dn = 0
    digits = 11
    while made < target:
        kind = _street_kind(rng, decile)
        street = _street_name(rng, used)
        b.street_id += 1
        digits = 11 if rng.random() < 0.5 else 12
        e0 = cell[0] + rng.randrange(_CELL_M)
        n0 = cell[1] + rng.randrange(_CELL_M)
        de, dn = rng.choice(((9, 0), (0, 9), (7, 6), (6, -7)))
        left = target - made
        if kind == "block":
            number = 0
            for _ in range(rng.randint(1, 3)):
                if made >= target:
                    break
                number += 2
                building = f"{rng.choice(_STREET_WORDS)} {rng.choice(_BLOCK_SUFFIXES)}"
                flats = min(rng.randint(8, 40), target - made)
                for f in range(1, flats + 1):
                    b.add(
                        kind=FLAT,
                        lsoa=lsoa,
                        decile=decile,
                        digits=digits,
                        sub=f"Flat {f}",
                        building=building,
                        number=str(number),
                        street=street,
                        locality=locality,
                        e=e0 + number * de,
                        n=n0 + number * dn,
                    )
                made += flats
            continue
        houses = {
            "terrace": rng.randint(16, 64),
            "semi": rng.randint(10, 40),
            "detached": rng.randint(6, 24),
        }[kind]
        house_kind = {"terrace": TERRACE, "semi": SEMI, "detached": DETACHED}[kind]
        p_hmo = (0.025 * dep) if kind == "terrace" else 0.0
        p_conv = (0.03 + 0.07 * dep) if kind == "terrace" else 0.02 if kind == "semi" else 0.0
        for number in range(1, min(houses, left) + 1):
            if made >= target:
                break
            e, n = e0 + number * de, n0 + number * dn
            r = rng.random()
            if r < p_hmo:
                for room in range(1, min(rng.randint(3, 6), target - made) + 1):
                    b.add(
                        kind=BEDSIT,
                        lsoa=lsoa,
                        decile=decile,
                        digits=digits,
                        sub=f"Room {room}",
                        building="",
                        number=str(number),
                        street=street,
                        locality=locality,
                        e=e,
                        n=n,
                    )
                    made += 1
            elif r < p_hmo + p_conv:
                labels = ("A", "B", "C") if rng.random() < 0.5 else ("1", "2", "3")
                for label in labels[: min(rng.randint(2, 3), target - made)]:
                    b.add(
                        kind=FLAT,
                        lsoa=lsoa,
                        decile=decile,
                        digits=digits,
                        sub=f"Flat {label}",
                        building="",
                        number=str(number),
                        street=street,
                        locality=locality,
                        e=e,
                        n=n,
                    )
                    made += 1
            else:
                b.add(
                    kind=house_kind,
                    lsoa=lsoa,
                    decile=decile,
                    digits=digits,
                    sub="",
                    building="",
                    number=str(number),
                    street=street,
                    locality=locality,
                    e=e,
                    n=n,
                )
                made += 1
    for establishment, capacity in communal:
        number += 2
        word = rng.choice(_STREET_WORDS)
        if establishment == CARE_HOME:
            building = f"{word} {rng.choice(_CARE_SUFFIXES)}"
        else:
            building = rng.choice(_HOSTEL_NAMES).format(w=word)
        b.add(
            kind=establishment,
            lsoa=lsoa,
            decile=decile,
            digits=digits,
            sub="",
            building=building,
            number=str(number),
            street=street,
            locality=locality,
            e=e0 + number * de,
            n=n0 + number * dn,
            capacity=capacity,
        )


def _capacities(rng: random.Random, beds: int, low: int, high: int) -> list[int]:
    """Sizes of establishments adding up to about `beds` (a small area gets one small home)."""
    out: list[int] = []
    left = beds
    while left > 0:
        cap = rng.randint(low, high)
        if cap > left:
            cap = max(left, 8)
        out.append(cap)
        left -= cap
    return out


def build_geography(
    rng: random.Random, dwellings: int, care_beds: int, hostel_beds: int
) -> Geography:
    """Areas and addresses: `dwellings` self-contained homes plus care homes and hostels."""
    n_lsoa = max(1, round(dwellings / 550))
    sizes = [rng.randint(400, 700) for _ in range(n_lsoa)]
    scale = dwellings / sum(sizes)
    sizes = [max(1, round(s * scale)) for s in sizes]
    sizes[-1] = max(1, sizes[-1] + dwellings - sum(sizes))

    side = math.ceil(math.sqrt(n_lsoa))
    cells = [
        (_CENTRE_E + (i % side - side / 2) * _CELL_M, _CENTRE_N + (i // side - side / 2) * _CELL_M)
        for i in range(n_lsoa)
    ]
    score = [
        math.hypot(i % side - (side - 1) / 2, i // side - (side - 1) / 2) / max(side / 2, 1)
        + 0.45 * rng.random()
        for i in range(n_lsoa)
    ]
    order = sorted(range(n_lsoa), key=lambda i: score[i])
    decile = [0] * n_lsoa
    for rank, i in enumerate(order):
        decile[i] = (
            1 + min(9, int(10 * ((rank + 0.5) / n_lsoa) ** 1.25))
            if n_lsoa > 1
            else rng.randint(1, 10)
        )

    n_wards = min(n_lsoa, max(20, round(n_lsoa / 25)))
    ward_of = [i * n_wards // n_lsoa for i in range(n_lsoa)]
    localities: list[str] = []
    while len(localities) < n_wards:
        name = rng.choice(_LOCALITY_FIRST) + rng.choice(_LOCALITY_SECOND)
        if name not in localities:
            localities.append(name)

    care = _capacities(rng, care_beds, 15, 60) if care_beds > 0 else []
    hostels = _capacities(rng, hostel_beds, 10, 40) if hostel_beds > 0 else []
    communal: list[list[tuple[int, int]]] = [[] for _ in range(n_lsoa)]
    for cap in care:
        communal[rng.randrange(n_lsoa)].append((CARE_HOME, cap))
    deprived = sorted(range(n_lsoa), key=lambda i: decile[i])[: max(1, n_lsoa // 3)]
    for cap in hostels:
        communal[rng.choice(deprived)].append((HOSTEL, cap))

    b = _Builder(rng)
    used: list[set[str]] = [set() for _ in range(n_wards)]
    bounds = [0]
    for i in range(n_lsoa):
        _build_lsoa(
            b,
            i,
            decile[i],
            sizes[i],
            localities[ward_of[i]],
            used[ward_of[i]],
            (int(cells[i][0]), int(cells[i][1])),
            communal[i],
        )
        bounds.append(len(b.cols["uprn"]))

    # output areas, postcodes: consecutive runs of addresses in street order within each LSOA
    oa_idx: list[int] = []
    postcodes: list[str] = []
    sector_used: dict[tuple[str, int], int] = {}
    ward_district = [_DISTRICTS[k % len(_DISTRICTS)] for k in range(n_wards)]
    ward_digit = [rng.randrange(10) for _ in range(n_wards)]

    def district_load(d: str) -> int:
        return sum(sector_used.get((d, x), 0) for x in range(10))

    def next_sector(k: int) -> tuple[str, int]:
        """The next postcode sector of ward k with room left (wards move on to a new district)."""
        while True:
            district = ward_district[k]
            for _ in range(10):
                key = (district, ward_digit[k] % 10)
                ward_digit[k] += 1
                if key not in sector_used:
                    sector_used[key] = rng.randrange(40)
                if sector_used[key] < _UNITS_PER_SECTOR:
                    return key
            ward_district[k] = min(_DISTRICTS, key=district_load)

    oa_count = 0
    for i in range(n_lsoa):
        lo, hi = bounds[i], bounds[i + 1]
        n = hi - lo
        n_oa = max(1, round(n / 125))
        for j in range(n):
            oa_idx.append(oa_count + j * n_oa // n)
        oa_count += n_oa
        j = lo
        key = next_sector(ward_of[i])
        while j < hi:
            run = rng.randint(10, 20)
            if sector_used[key] >= _UNITS_PER_SECTOR:
                key = next_sector(ward_of[i])
            unit = sector_used[key]
            sector_used[key] = unit + 1
            pc = f"{key[0]} {key[1]}{_POSTCODE_LETTERS[unit // 20]}{_POSTCODE_LETTERS[unit % 20]}"
            postcodes.extend([pc] * min(run, hi - j))
            j += run

    lsoa_codes = [f"E01{90000 + i:06d}" for i in range(n_lsoa)]
    msoa_of = [i // 5 for i in range(n_lsoa)]
    lsoas = pl.DataFrame(
        {
            "lsoa_idx": list(range(n_lsoa)),
            "lsoa": lsoa_codes,
            "lsoa_name": [
                f"{LAD_NAME} {msoa_of[i] + 1:03d}{'ABCDE'[i % 5]}" for i in range(n_lsoa)
            ],
            "decile": decile,
            "msoa": [f"E02{90000 + msoa_of[i]:06d}" for i in range(n_lsoa)],
            "ward": [f"E05{90000 + ward_of[i]:06d}" for i in range(n_lsoa)],
        },
        schema_overrides={"lsoa_idx": pl.Int32, "decile": pl.Int8},
    )
    addresses = (
        pl.DataFrame(
            b.cols,
            schema_overrides={
                "uprn": pl.Int64,
                "kind": pl.Int8,
                "capacity": pl.Int32,
                "lsoa_idx": pl.Int32,
                "street_id": pl.Int32,
                "easting": pl.Int32,
                "northing": pl.Int32,
            },
        )
        .with_columns(
            postcode=pl.Series(postcodes),
            oa=pl.Series([f"E00{900000 + o:06d}" for o in oa_idx]),
            cls=pl.col("kind").replace_strict(dict(enumerate(CLASS_CODES)), return_dtype=pl.Utf8),
            is_communal=pl.col("kind").is_in(list(COMMUNAL_KINDS)),
            town=pl.lit(TOWN),
        )
        .join(lsoas, on="lsoa_idx", how="left", maintain_order="left")
        .hstack(uniforms(rng, len(postcodes), ["u_bed", "u_band", "u_social", "u_private"]))
        .with_columns(**_stock_exprs())
        .drop("u_bed", "u_band", "u_social", "u_private")
        .with_row_index("dwelling")
        .with_columns(pl.col("dwelling").cast(pl.Int32))
        .with_columns(
            neighbour_uprn=pl.coalesce(
                pl.col("uprn").shift(1).over("street_id"),
                pl.col("uprn").shift(-1).over("street_id"),
            )
        )
    )
    return Geography(addresses=addresses, lsoas=lsoas)
