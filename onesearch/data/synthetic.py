"""A seeded synthetic e-commerce world: catalog, shoppers, search sessions and their event logs.

:func:`generate_world` turns a :class:`WorldConfig` (or a preset name from :data:`PRESETS`) into a
:class:`~onesearch.data.dataset.Dataset` named ``synthetic-<preset>`` (``synthetic-custom`` for a config that is
no preset). Every random draw comes from one ``np.random.default_rng(seed)``, so the same config and seed give
identical tables and another seed gives different ones. Everything is vectorised numpy/polars (the only Python
loops run over taxonomy levels, categories, brands and constants), so the ``large`` preset (1M items, ~10M
events) generates in minutes.

World model
-----------
Catalog
    A hand-written taxonomy of departments > families > product nouns (each noun with a small synonym table) is
    crossed with generic modifiers ("travel", "heavy-duty", ...) to give ``n_categories`` leaf categories, e.g.
    ``Kitchen & Dining > Drinkware > Travel Mugs``; ``category_depth`` (1-4) controls how much of that path is
    written (4 adds the bare noun level, ``... > Mugs > Travel Mugs``). Each family has its own material and size
    vocabulary; each leaf draws a handful of colours. Brands specialise: a brand has a home department and
    ``brand_specialisation`` of every department's items carry one of its home brands. Titles are built from
    brand + material + leaf product type + colour + size in one of three templates; with probability
    ``hot_word_rate`` a title also carries one or two *hot words* ("new", "hot sale", ...), chosen independently of
    what the item is, so they appear in every corner of the catalog. Descriptions are one or two sentences from
    the same parts. Prices are log-normal per leaf, scaled by a per-brand premium. ``attributes`` lists
    (material, color, size).
Popularity
    Item popularity is Zipf(``zipf_exponent``) over a random permutation of the items (so it is unrelated to
    ``item_id``). A random ``cold_start_share`` of the items (new listings) get weight zero: they never appear in
    any event. Every other item is shown at least once (a long-tail exposure pass), so the share of items without
    interactions is exactly ``round(cold_start_share * n_items) / n_items``.
Shoppers
    Each user has ``favourite_categories`` favourite leaves (the first by category traffic, the others from the
    same department with probability ``preference_locality``) with Dirichlet(``preference_concentration``)
    weights, and two favourite brands taken from popular items of those leaves.
Search sessions
    A user has on average ``sessions_per_user`` search sessions. Each picks an intent leaf from the user's
    favourites (a random leaf with probability ``intent_noise``) and types a query: the leaf's product noun
    (replaced by a synonym at ``synonym_rate``), usually its modifier, sometimes a colour / material of the leaf,
    sometimes a brand (``brand_query_rate``), sometimes a hot word (``hot_word_query_rate``); at ``typo_rate`` the
    noun gets one typo (adjacent characters swapped, or one dropped). Queries are lower-case and never empty.
    The engine shows up to ``impressions_per_search`` distinct items: a share ``1 - impression_noise`` drawn by
    popularity from the intent leaf, the rest from the same family, department or whole catalog, ranked by a
    noisy relevance score. Clicks follow a position-based model: P(click) = examination(position) x
    attractiveness, with examination ``(1 + position) ** -position_decay`` and attractiveness rising with the
    item's relevance to the intent (same leaf > family > department > elsewhere), its match to the query's
    brand / colour / material, its popularity and the user's brand affinity. Carts come only from clicks,
    purchases only from carts.
Browse purchases
    Besides search, users buy ``browse_purchases_per_user`` items on average outside search (recommendations,
    direct visits; a lone ``purchase`` event with a null ``request_id``), topped up so that every user has at
    least ``min_purchases_per_user`` purchases in total (leave-one-out splits need three).

Tables and their guarantees
---------------------------
``items``         ``item_id`` 0..n_items-1, title, description, brand, category_path (root first), price, attributes.
``interactions``  one row per impression / click / cart / purchase, sorted by time; per user the timestamps
                  (int seconds) strictly increase; search-driven events carry their ``request_id``; within a
                  request every clicked item was shown, every carted item clicked, every purchased item carted.
``search_log``    one row per search request with at least one click: the target is the purchased item if the
                  session bought (the highest-ranked one), else the carted one, else the first clicked; ``event``
                  is the strongest event on it; ``position`` counts the user's purchases strictly before the
                  request. ``request_id`` is chronological.

``Dataset.meta["world"]`` holds the full config (seed included); :func:`query_vocabulary` lists every token a
typo-free query can contain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import polars as pl

from onesearch.data import schema as S
from onesearch.data.dataset import Dataset

# -- vocabulary ----------------------------------------------------------------------------------------------

_TAXONOMY: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Kitchen & Dining",
        (
            "Drinkware|stainless steel,glass,ceramic,bamboo,copper|250 ml,350 ml,500 ml,750 ml"
            "|mug=coffee cup,tumbler=travel cup,thermos=vacuum flask,teapot=tea kettle,pitcher=jug,carafe=decanter",
            "Cookware|cast iron,stainless steel,aluminium,copper,enamel|20 cm,24 cm,28 cm,32 cm"
            "|skillet=frying pan/fry pan,saucepan=pot,wok=stir fry pan,casserole=dutch oven,griddle=grill pan"
            ",steamer=steam basket",
            "Tableware|porcelain,stoneware,glass,bamboo,melamine|set of 2,set of 4,set of 6,set of 12"
            "|plate=dinner plate,bowl=soup bowl,platter=serving tray,saucer=small plate,ramekin=souffle dish"
            ",coaster=drink mat",
        ),
    ),
    (
        "Home & Living",
        (
            "Lighting|brass,glass,rattan,linen,aluminium|small,medium,large"
            "|lamp=table light,lantern=hurricane lamp,chandelier=ceiling light,sconce=wall light,candle=tealight"
            ",nightlight=night light",
            "Storage|wicker,canvas,plastic,oak,steel|small,medium,large,extra large"
            "|basket=hamper,bin=container,crate=storage box,rack=shelving unit,organizer=organiser/caddy"
            ",drawer=chest",
            "Textiles|cotton,linen,wool,velvet,polyester|single,double,queen,king"
            "|blanket=throw,pillow=cushion,duvet=comforter/quilt,curtain=drape,rug=carpet,towel=bath sheet",
        ),
    ),
    (
        "Lab Supplies",
        (
            "Glassware|borosilicate glass,quartz,polypropylene,soda-lime glass|50 ml,100 ml,250 ml,500 ml,1000 ml"
            "|beaker=griffin beaker,burette=buret,pipette=dropper,cylinder=measuring cylinder"
            ",funnel=filter funnel,cuvette=sample cell",
            "Lab Equipment|stainless steel,aluminium,abs plastic,cast iron|benchtop,floor-standing,handheld"
            "|centrifuge=spinner,microscope=scope,hotplate=heating plate,balance=lab scale"
            ",stirrer=magnetic mixer,incubator=culture oven",
            "Safety|nitrile,latex,polycarbonate,cotton,neoprene|S,M,L,XL"
            "|glove=gloves,goggles=safety glasses,labcoat=lab coat,respirator=face mask,apron=smock"
            ",visor=face shield",
        ),
    ),
    (
        "Sports & Outdoors",
        (
            "Camping|nylon,polyester,ripstop,aluminium,canvas|1 person,2 person,4 person,6 person"
            "|tent=shelter,hammock=swing bed,tarp=groundsheet,backpack=rucksack/daypack,cooler=ice chest/cool box"
            ",stove=camp burner",
            "Fitness|rubber,neoprene,foam,steel,cast iron|2 kg,5 kg,10 kg,20 kg"
            "|dumbbell=hand weight,kettlebell=kettle bell,barbell=weight bar,rope=skipping rope/jump rope"
            ",bench=workout bench,roller=foam roller",
            "Cycling|aluminium,carbon,steel,titanium,rubber|S,M,L"
            "|helmet=bike helmet,bicycle=bike,pump=inflator,saddle=bike seat,pannier=bike bag,lock=bike lock",
        ),
    ),
    (
        "Fashion",
        (
            "Footwear|leather,suede,canvas,mesh,rubber|EU 38,EU 40,EU 42,EU 44,EU 46"
            "|sneaker=trainer/running shoe,boot=ankle boot,sandal=flip flop,loafer=slip-on,slipper=house shoe"
            ",heel=high heel",
            "Outerwear|wool,down,cotton,polyester,leather|XS,S,M,L,XL"
            "|jacket=windbreaker,parka=anorak,raincoat=rain jacket,vest=gilet,poncho=rain cape"
            ",cardigan=jumper/sweater",
            "Accessories|leather,silk,cotton,wool,cashmere|one size,small,medium,large"
            "|scarf=shawl,belt=waist belt,wallet=purse,hat=cap,umbrella=brolly,tie=necktie",
        ),
    ),
    (
        "Office",
        (
            "Stationery|paper,recycled paper,leather,plastic,metal|A4,A5,A6"
            "|notebook=journal/notepad,pen=ballpoint,pencil=graphite pencil,stapler=staple gun,folder=binder"
            ",envelope=mailer",
            "Office Furniture|oak,walnut,steel,mesh,plywood|small,medium,large"
            "|desk=workstation,chair=office chair,bookcase=bookshelf,cabinet=filing cabinet,stool=seat"
            ",footrest=foot stool",
        ),
    ),
    (
        "Electronics",
        (
            "Audio|plastic,aluminium,fabric,wood|small,medium,large"
            "|headphones=headset/earphones,speaker=loudspeaker,microphone=mic,amplifier=amp"
            ",turntable=record player,radio=receiver",
            "Gadgets|plastic,aluminium,silicone,braided nylon|small,medium,large"
            "|charger=power adapter,cable=cord,powerbank=power bank/portable charger,keyboard=keypad"
            ",mouse=pointer,webcam=web camera",
        ),
    ),
    (
        "Garden",
        (
            "Garden Tools|steel,carbon steel,ash wood,fiberglass,aluminium|small,medium,large"
            "|shovel=spade,rake=leaf rake,trowel=hand spade,pruner=secateurs/shears,hoe=weeder,wheelbarrow=barrow",
            "Planters|terracotta,ceramic,concrete,resin,wicker|10 cm,20 cm,30 cm,40 cm"
            "|planter=flower pot,vase=flower vase,trough=window box,birdbath=bird bath,trellis=plant support"
            ",urn=garden urn",
        ),
    ),
)
"""Departments, each with families written as ``name|materials|sizes|noun=synonym/synonym,noun,...``."""

_MODIFIERS: tuple[str, ...] = (
    "compact", "deluxe", "classic", "travel", "mini", "heavy-duty", "portable", "smart", "vintage", "ergonomic",
    "foldable", "outdoor", "kids", "professional", "eco", "slim", "stackable", "insulated", "adjustable",
    "rechargeable", "magnetic", "modular", "waterproof", "lightweight", "reusable", "rustic", "modern",
    "industrial", "handmade", "everyday",
)  # fmt: skip
"""Generic product-type modifiers; a leaf category is (modifier, noun)."""

_COLORS: tuple[str, ...] = (
    "black", "white", "red", "blue", "green", "grey", "navy", "beige", "pink", "yellow", "orange", "purple",
    "brown", "silver", "gold", "teal", "olive", "ivory", "charcoal", "turquoise",
)  # fmt: skip
"""Colour vocabulary; each leaf uses :data:`_LEAF_COLORS` of them."""

_LEAF_COLORS = 5

_BRAND_HEADS: tuple[str, ...] = (
    "Zen", "Nor", "Alt", "Bri", "Cal", "Dex", "Elo", "Fyn", "Gra", "Hal", "Ira", "Jun", "Kor", "Lum", "Mav",
    "Nex", "Oro", "Pax", "Qui", "Ros", "Sol", "Tor", "Ulo", "Vel", "Wex", "Xan", "Yar", "Zor", "Ami", "Bel",
    "Cor", "Dav", "Fer", "Gal", "Hel", "Kin", "Lor", "Mer", "Pol", "Ter",
)  # fmt: skip
_BRAND_TAILS: tuple[str, ...] = (
    "tek", "ora", "ix", "ano", "elle", "by", "co", "den", "ford", "gear", "io", "ist", "kin", "line", "lux",
    "mark", "mo", "nest", "ona", "para", "ra", "rix", "ro", "sa", "stone", "ton", "vo", "wood", "ya", "za",
)  # fmt: skip
_BRAND_POOL: tuple[str, ...] = tuple(h + t for h in _BRAND_HEADS for t in _BRAND_TAILS)
"""Brand names (1,200); beyond that a numeral is appended ("Zentek 2")."""

DEFAULT_HOT_WORDS: tuple[str, ...] = ("new", "2024", "hot sale", "premium", "free shipping", "best seller")
"""Marketing words sellers put in titles whatever the product is."""

_IRREGULAR_PLURALS = {"scarf": "scarves", "mouse": "mice", "trellis": "trellises"}

_LEVEL_RELEVANCE = np.array([1.0, 0.35, 0.15, 0.05])
"""Relevance of a shown item to the intent: same leaf, same family, same department, elsewhere."""
_LEVELS = 4  # leaf, family, department, catalog


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith("s"):
        return noun
    if noun.endswith(("ch", "sh", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _title(text: str) -> str:
    """Capitalise every word (keeps "EU 42" and "XL" as they are)."""
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def _parse_taxonomy():
    depts: list[str] = []
    families: list[str] = []
    family_dept: list[int] = []
    family_materials: list[list[int]] = []
    family_sizes: list[list[int]] = []
    nouns: list[str] = []
    noun_family: list[int] = []
    synonyms: list[tuple[str, ...]] = []
    materials: list[str] = []
    sizes: list[str] = []

    def intern(table: list[str], word: str) -> int:
        if word not in table:
            table.append(word)
        return table.index(word)

    for dept, fams in _TAXONOMY:
        depts.append(dept)
        for spec in fams:
            name, mats, szs, nns = spec.split("|")
            families.append(name)
            family_dept.append(len(depts) - 1)
            family_materials.append([intern(materials, m) for m in mats.split(",")])
            family_sizes.append([intern(sizes, s) for s in szs.split(",")])
            for entry in nns.split(","):
                noun, _, syn = entry.partition("=")
                if noun in nouns:
                    raise AssertionError(f"duplicate noun {noun!r} in the taxonomy")
                nouns.append(noun)
                noun_family.append(len(families) - 1)
                synonyms.append(tuple(s for s in syn.split("/") if s))

    def pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        return np.array([r + [r[0]] * (width - len(r)) for r in rows]), np.array([len(r) for r in rows])

    return (
        depts,
        families,
        np.array(family_dept),
        pad(family_materials),
        pad(family_sizes),
        nouns,
        np.array(noun_family),
        synonyms,
        materials,
        sizes,
    )


(
    _DEPTS,
    _FAMILIES,
    _FAMILY_DEPT,
    (_FAMILY_MATERIALS, _FAMILY_N_MATERIALS),
    (_FAMILY_SIZES, _FAMILY_N_SIZES),
    _NOUNS,
    _NOUN_FAMILY,
    _SYNONYMS,
    _MATERIALS,
    _SIZES,
) = _parse_taxonomy()

# head words of queries: every noun, then every synonym; _SYN_START[noun] is where the noun's synonyms start
_SYN_COUNT = np.array([len(s) for s in _SYNONYMS])
_SYN_START = len(_NOUNS) + np.concatenate([[0], np.cumsum(_SYN_COUNT)[:-1]])
_HEADS: tuple[str, ...] = (*_NOUNS, *(s for syns in _SYNONYMS for s in syns))

MAX_CATEGORIES = len(_NOUNS) * len(_MODIFIERS)
"""Most leaf categories the vocabulary can name (noun x modifier)."""


# -- config --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the synthetic world; validated on construction (ValueError naming the field)."""

    n_items: int = 300
    """Number of products (item_id 0..n_items-1)."""
    n_users: int = 200
    """Number of shoppers (user_id 0..n_users-1); every one of them appears in the interactions."""
    n_categories: int = 12
    """Number of leaf categories (at most MAX_CATEGORIES, and at most n_items: every leaf holds an item)."""
    category_depth: int = 3
    """Levels written in category_path: 1 leaf, 2 dept > leaf, 3 dept > family > leaf, 4 adds the noun level."""
    n_brands: int = 24
    """Number of brands."""
    brand_specialisation: float = 0.85
    """Probability that an item's brand is one whose home department is the item's department."""
    zipf_exponent: float = 1.1
    """Exponent s of the Zipf popularity over items (weight of the rank-r item is r ** -s)."""
    cold_start_share: float = 0.1
    """Share of items that get no interaction at all (new listings); in [0, 1)."""
    hot_words: tuple[str, ...] = DEFAULT_HOT_WORDS
    """Marketing words that may appear in any title and query, whatever the product."""
    hot_word_rate: float = 0.2
    """Probability that a title carries one or two hot words, independently of the item."""
    favourite_categories: int = 3
    """Number of favourite leaf categories per user (long-term preference)."""
    preference_concentration: float = 0.5
    """Dirichlet concentration of a user's weights over the favourites (small = one dominant favourite)."""
    preference_locality: float = 0.6
    """Probability that a further favourite is drawn from the first favourite's department."""
    sessions_per_user: float = 6.0
    """Mean number of search sessions per user (1 + Poisson, so at least one)."""
    intent_noise: float = 0.15
    """Probability that a session's intent is a random leaf rather than a favourite."""
    impressions_per_search: int = 10
    """Result page size: most items shown per request (duplicates drawn are shown once)."""
    impression_noise: float = 0.3
    """Share of shown items drawn outside the intent leaf (half family, a quarter department, a quarter any)."""
    ranking_noise: float = 0.5
    """Standard deviation of the noise added to the engine's log-relevance score when ranking a page."""
    typo_rate: float = 0.05
    """Probability that a query's product noun carries one typo (two adjacent characters swapped, or one dropped)."""
    synonym_rate: float = 0.2
    """Probability that a query names the product type by a synonym instead of its noun."""
    hot_word_query_rate: float = 0.05
    """Probability that a query carries a hot word."""
    modifier_query_rate: float = 0.65
    """Probability that a query keeps the leaf's modifier ("travel" in "travel mug")."""
    attribute_query_rate: float = 0.3
    """Probability that a query names a colour of the leaf (a material at 0.6 times this rate)."""
    brand_query_rate: float = 0.15
    """Probability that a query names a brand (half the time one of the user's favourite brands)."""
    click_rate: float = 0.35
    """Click probability of a fully examined, fully relevant item of average popularity."""
    position_decay: float = 0.7
    """Examination probability at 0-based display position p is (1 + p) ** -position_decay."""
    brand_affinity_boost: float = 1.0
    """Relative click uplift on the user's favourite brands (half of it applies to carts, a third to purchases)."""
    cart_rate: float = 0.3
    """Probability that a click on an item of the intent leaf leads to a cart (0.4 times this off-intent)."""
    purchase_rate: float = 0.5
    """Probability that a carted item is bought."""
    browse_purchases_per_user: float = 1.0
    """Mean number of purchases outside search per user (before the top-up to min_purchases_per_user)."""
    min_purchases_per_user: int = 3
    """Every user ends with at least this many purchases (browse purchases are added to reach it)."""
    start_time: int = 1_672_531_200
    """Earliest timestamp (seconds; default 2023-01-01 UTC); users start within 30 days of it."""
    mean_session_gap_s: int = 3 * 86_400
    """Mean gap between two sessions of a user, in seconds (plus a 30-minute minimum)."""
    seed: int = 0
    """Seed of np.random.default_rng; the only source of randomness."""

    def __post_init__(self) -> None:
        def fail(name: str, want: str) -> None:
            raise ValueError(f"WorldConfig.{name} must be {want}, got {getattr(self, name)!r}")

        def is_int(v: object) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        def is_num(v: object) -> bool:
            return (
                isinstance(v, int | float | np.integer | np.floating)
                and not isinstance(v, bool)
                and math.isfinite(v)
            )

        for name in ("n_items", "n_users", "n_categories", "n_brands", "impressions_per_search",
                     "favourite_categories", "mean_session_gap_s"):  # fmt: skip
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                fail(name, "an integer >= 1")
        for name in ("min_purchases_per_user", "seed", "start_time"):
            v = getattr(self, name)
            if not is_int(v) or v < 0:
                fail(name, "an integer >= 0")
        if not is_int(self.category_depth) or not 1 <= self.category_depth <= 4:
            fail("category_depth", "an integer in 1..4")
        if self.n_categories > MAX_CATEGORIES:
            fail("n_categories", f"at most {MAX_CATEGORIES} (nouns x modifiers)")
        if self.n_categories > self.n_items:
            fail("n_categories", f"at most n_items ({self.n_items}) so that every leaf holds an item")
        if not is_num(self.cold_start_share) or not 0 <= self.cold_start_share < 1:
            fail("cold_start_share", "in [0, 1)")
        for name in ("brand_specialisation", "hot_word_rate", "preference_locality", "intent_noise",
                     "impression_noise", "typo_rate", "synonym_rate", "hot_word_query_rate", "modifier_query_rate",
                     "attribute_query_rate", "brand_query_rate", "cart_rate", "purchase_rate"):  # fmt: skip
            v = getattr(self, name)
            if not is_num(v) or not 0 <= v <= 1:
                fail(name, "in [0, 1]")
        if not is_num(self.click_rate) or not 0 < self.click_rate <= 1:
            fail("click_rate", "in (0, 1]")
        for name in ("zipf_exponent", "ranking_noise", "position_decay", "brand_affinity_boost",
                     "browse_purchases_per_user"):  # fmt: skip
            v = getattr(self, name)
            if not is_num(v) or v < 0:
                fail(name, "a number >= 0")
        if not is_num(self.preference_concentration) or self.preference_concentration <= 0:
            fail("preference_concentration", "a number > 0")
        if not is_num(self.sessions_per_user) or self.sessions_per_user < 1:
            fail("sessions_per_user", "a number >= 1")
        if not isinstance(self.hot_words, tuple) or not all(
            isinstance(w, str) and w.strip() for w in self.hot_words
        ):
            fail("hot_words", "a tuple of non-empty strings")


PRESETS: dict[str, WorldConfig] = {
    "tiny": WorldConfig(),
    "small": WorldConfig(n_items=5_000, n_users=2_000, n_categories=60, n_brands=150, sessions_per_user=8.0),
    "medium": WorldConfig(
        n_items=50_000, n_users=20_000, n_categories=400, n_brands=600, sessions_per_user=8.0
    ),
    "large": WorldConfig(
        n_items=1_000_000, n_users=100_000, n_categories=2_000, n_brands=1_200, sessions_per_user=8.0
    ),
}
"""Sizes and generation times on a 2-core CPU: tiny (300 items, 200 users, ~16k events) ~0.1 s, used by tests and
the quickstart; small (5k items, 2k users, ~190k events) ~0.3 s; medium (50k items, 20k users, ~2M events) ~4 s;
large (1M items, 100k users, ~10M events) ~35 s and ~4.5 GB peak memory, for scale benchmarks."""


def resolve_config(cfg: WorldConfig | str = "tiny", seed: int | None = None) -> tuple[WorldConfig, str]:
    """The config to generate and its preset name ("custom" when it matches no preset up to the seed)."""
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise ValueError(f"unknown synthetic preset {cfg!r}; expected one of {sorted(PRESETS)}")
        name, cfg = cfg, PRESETS[cfg]
    elif isinstance(cfg, WorldConfig):
        name = next((k for k, p in PRESETS.items() if replace(p, seed=cfg.seed) == cfg), "custom")
    else:
        raise ValueError(
            f"cfg must be a WorldConfig or a preset name {sorted(PRESETS)}, got {type(cfg).__name__}"
        )
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    return cfg, name


def query_vocabulary(cfg: WorldConfig | str = "tiny") -> frozenset[str]:
    """Every whitespace token a typo-free query of this world can contain (lower case)."""
    cfg, _ = resolve_config(cfg)
    words = [*_MODIFIERS, *_HEADS, *_COLORS, *_MATERIALS, *_BRAND_POOL, *cfg.hot_words]
    numerals = [str(i + 2) for i in range((cfg.n_brands - 1) // len(_BRAND_POOL))]
    return frozenset(tok for w in [*words, *numerals] for tok in w.lower().split())


# -- helpers -------------------------------------------------------------------------------------------------


def _brand_names(n: int, rng: np.random.Generator) -> list[str]:
    pool = len(_BRAND_POOL)
    order = rng.permutation(pool)
    return [_BRAND_POOL[order[i % pool]] + (f" {i // pool + 1}" if i >= pool else "") for i in range(n)]


def _segments(group_sorted: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.arange(n_groups)
    return np.searchsorted(group_sorted, g, "left"), np.searchsorted(group_sorted, g, "right")


class _Sampler:
    """Weighted draws inside contiguous segments of one sorted array, vectorised by inverse CDF.

    ``levels`` is a list of (starts, ends) per group; a group with zero total weight falls back to the last
    level's group 0 (the whole array). Zero-weight entries are never drawn.
    """

    def __init__(
        self, order: np.ndarray, weight_sorted: np.ndarray, levels: list[tuple[np.ndarray, np.ndarray]]
    ):
        self.order = order
        self.cum = np.cumsum(weight_sorted)
        c0 = np.concatenate([[0.0], self.cum])
        last_pos = np.maximum.accumulate(np.where(weight_sorted > 0, np.arange(len(weight_sorted)), -1))
        self.levels = []
        for starts, ends in levels:
            lo, hi = c0[starts], c0[ends]
            last = last_pos[np.maximum(ends - 1, 0)]
            self.levels.append((lo, hi, last, hi > lo))
        if not self.levels[-1][3][0]:
            raise ValueError("nothing to sample: every weight is zero")

    def draw(self, level: int, groups: np.ndarray, u: np.ndarray) -> np.ndarray:
        lo, hi, last, valid = self.levels[level]
        glo, ghi, glast = lo[groups], hi[groups], last[groups]
        bad = ~valid[groups]
        if bad.any():
            flo, fhi, flast, _ = self.levels[-1]
            glo, ghi, glast = (
                np.where(bad, flo[0], glo),
                np.where(bad, fhi[0], ghi),
                np.where(bad, flast[0], glast),
            )
        idx = np.searchsorted(self.cum, glo + u * (ghi - glo), side="right")
        return self.order[np.minimum(idx, glast)]


def _segmented_rank(sorted_keys: np.ndarray) -> np.ndarray:
    """0-based rank of each entry within its run of equal keys (keys sorted)."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    return np.arange(n) - start


def _gather(values: list[str] | tuple[str, ...], idx: np.ndarray) -> pl.Series:
    return pl.Series(list(values), dtype=pl.String).gather(idx)


# -- catalog -------------------------------------------------------------------------------------------------


@dataclass
class _Catalog:
    items: pl.DataFrame
    leaf_noun: np.ndarray
    leaf_mod: np.ndarray
    leaf_family: np.ndarray
    leaf_dept: np.ndarray
    leaf_colors: np.ndarray
    leaf_weight: np.ndarray
    item_leaf: np.ndarray
    item_brand: np.ndarray
    item_color: np.ndarray
    item_material: np.ndarray
    brand_names: list[str]


def _build_catalog(cfg: WorldConfig, rng: np.random.Generator) -> _Catalog:
    n, n_leaf, n_nouns, n_mods = cfg.n_items, cfg.n_categories, len(_NOUNS), len(_MODIFIERS)

    # leaves: distinct (noun, modifier) pairs spread over all nouns, then ordered dept > family > noun
    k = np.arange(n_leaf)
    noun = rng.permutation(n_nouns)[k % n_nouns]
    mod = rng.permutation(n_mods)[(rng.integers(0, n_mods, n_nouns)[noun] + k // n_nouns) % n_mods]
    order = np.lexsort((mod, noun))
    leaf_noun, leaf_mod = noun[order], mod[order]
    leaf_family = _NOUN_FAMILY[leaf_noun]
    leaf_dept = _FAMILY_DEPT[leaf_family]
    leaf_colors = np.argsort(rng.random((n_leaf, len(_COLORS))), axis=1)[:, :_LEAF_COLORS]
    leaf_ptype, leaf_paths = [], []
    for j in range(n_leaf):  # loop over categories
        nn, md = _NOUNS[leaf_noun[j]], _MODIFIERS[leaf_mod[j]]
        leaf = _title(f"{md} {_plural(nn)}")
        full = [_DEPTS[leaf_dept[j]], _FAMILIES[leaf_family[j]], _title(_plural(nn)), leaf]
        leaf_paths.append(
            {1: full[3:], 2: [full[0], full[3]], 3: [full[0], full[1], full[3]], 4: full}[cfg.category_depth]
        )
        leaf_ptype.append(_title(f"{md} {nn}"))

    # items: every leaf gets one, the rest follow log-normal leaf sizes
    leaf_weight = rng.lognormal(0.0, 0.6, n_leaf)
    extra = rng.choice(n_leaf, size=n - n_leaf, p=leaf_weight / leaf_weight.sum())
    item_leaf = rng.permutation(np.concatenate([np.arange(n_leaf), extra]))
    item_family = leaf_family[item_leaf]
    item_dept = leaf_dept[item_leaf]

    # brands: a home department each; most items carry a brand of their department
    n_brands = cfg.n_brands
    brand_names = _brand_names(n_brands, rng)
    present = np.unique(leaf_dept)
    brand_home = present[rng.permutation(np.arange(n_brands) % len(present))]
    by_home = np.argsort(brand_home, kind="stable")
    home_start, home_end = _segments(brand_home[by_home], len(_DEPTS))
    home_cnt = (home_end - home_start)[item_dept]
    local = np.minimum(
        home_start[item_dept] + np.floor(rng.random(n) ** 2 * home_cnt).astype(np.int64), n_brands - 1
    )
    specialised = (rng.random(n) < cfg.brand_specialisation) & (home_cnt > 0)
    item_brand = np.where(specialised, by_home[local], rng.integers(0, n_brands, n))

    # attributes
    item_material = _FAMILY_MATERIALS[
        item_family, (rng.random(n) * _FAMILY_N_MATERIALS[item_family]).astype(np.int64)
    ]
    item_color = leaf_colors[item_leaf, rng.integers(0, _LEAF_COLORS, n)]
    item_size = _FAMILY_SIZES[item_family, (rng.random(n) * _FAMILY_N_SIZES[item_family]).astype(np.int64)]

    # price: log-normal per leaf around a family level, times a brand premium
    family_mu = rng.normal(np.log(35.0), 0.7, len(_FAMILIES))
    leaf_mu = family_mu[leaf_family] + rng.normal(0.0, 0.35, n_leaf)
    leaf_sigma = rng.uniform(0.2, 0.5, n_leaf)
    brand_mult = rng.lognormal(0.0, 0.25, n_brands)
    price = (
        np.exp(leaf_mu[item_leaf] + leaf_sigma[item_leaf] * rng.standard_normal(n)) * brand_mult[item_brand]
    )
    price = np.maximum(np.round(price, 2), 0.99)

    # hot words, independent of the item
    n_hot = len(cfg.hot_words)
    has_hot = rng.random(n) < (cfg.hot_word_rate if n_hot else 0.0)
    hw1 = rng.integers(0, max(n_hot, 1), n)
    two = (rng.random(n) < 0.35) & (n_hot > 1)
    hw2 = (hw1 + 1 + rng.integers(0, max(n_hot - 1, 1), n)) % max(n_hot, 1)
    hot_display = [_title(w) for w in cfg.hot_words] or [""]

    template = rng.integers(0, 3, n)
    blurb = rng.integers(0, 3, n)
    parts = pl.DataFrame(
        {
            "brand": _gather(brand_names, item_brand),
            "ptype": _gather(leaf_ptype, item_leaf),
            "mat": _gather(_MATERIALS, item_material),
            "Mat": _gather([_title(m) for m in _MATERIALS], item_material),
            "col": _gather(_COLORS, item_color),
            "Col": _gather([_title(m) for m in _COLORS], item_color),
            "ptype_l": _gather([p.lower() for p in leaf_ptype], item_leaf),
            "family_l": _gather([f.lower() for f in _FAMILIES], item_family),
            "dept_l": _gather([d.lower() for d in _DEPTS], item_dept),
            "size": _gather(_SIZES, item_size),
            "tpl": template,
            "blurb": blurb,
            "has_hot": has_hot,
            "two": two,
            "hw1": _gather(hot_display, hw1),
            "hw2": _gather(hot_display, hw2),
        }
    )
    c = pl.col
    hot = pl.when(c("two")).then(pl.format("{} {}", "hw1", "hw2")).otherwise(c("hw1"))
    base = (
        pl.when(c("tpl") == 0)
        .then(pl.format("{} {} {}, {}, {}", "brand", "Mat", "ptype", "Col", "size"))
        .when(c("tpl") == 1)
        .then(pl.format("{} {} - {} {}, {}", "brand", "ptype", "Col", "Mat", "size"))
        .otherwise(pl.format("{} {} {} by {} ({})", "Col", "Mat", "ptype", "brand", "size"))
    )
    title = (
        pl.when(c("has_hot") & (c("tpl") == 1))
        .then(pl.format("{} [{}]", base, hot))
        .when(c("has_hot"))
        .then(pl.format("{} {}", hot, base))
        .otherwise(base)
    )
    description = (
        pl.when(c("blurb") == 0)
        .then(pl.format("{} in {} {}, size {}. Part of the {} {} range, made for everyday use.",
                        "ptype", "col", "mat", "size", "brand", "family_l"))
        .when(c("blurb") == 1)
        .then(pl.format("{} {} made of {}, available in {}. Size {}; designed for {} fans.",
                        "brand", "ptype_l", "mat", "col", "size", "dept_l"))
        .otherwise(pl.format("A {} {} in {} from the {} {} collection. Size: {}.",
                             "mat", "ptype_l", "col", "brand", "family_l", "size"))
    )  # fmt: skip
    attributes = pl.concat_list(
        [
            pl.struct(name=pl.lit("material"), value=c("mat")),
            pl.struct(name=pl.lit("color"), value=c("col")),
            pl.struct(name=pl.lit("size"), value=c("size")),
        ]
    )
    items = parts.select(
        pl.Series(S.ITEM_ID, np.arange(n, dtype=np.int64)),
        title.alias(S.TITLE),
        description.alias(S.DESCRIPTION),
        c("brand").alias(S.BRAND),
        pl.Series(S.CATEGORY_PATH, leaf_paths, dtype=pl.List(pl.String)).gather(item_leaf),
        pl.Series(S.PRICE, price),
        attributes.alias(S.ATTRIBUTES),
    )
    return _Catalog(
        items=items,
        leaf_noun=leaf_noun,
        leaf_mod=leaf_mod,
        leaf_family=leaf_family,
        leaf_dept=leaf_dept,
        leaf_colors=leaf_colors,
        leaf_weight=leaf_weight,
        item_leaf=item_leaf,
        item_brand=item_brand,
        item_color=item_color,
        item_material=item_material,
        brand_names=brand_names,
    )


# -- behaviour -----------------------------------------------------------------------------------------------


@dataclass
class _Queries:
    text: pl.Series
    color: np.ndarray
    material: np.ndarray
    brand: np.ndarray


def _build_queries(
    cfg: WorldConfig,
    cat: _Catalog,
    rng: np.random.Generator,
    s_user: np.ndarray,
    s_leaf: np.ndarray,
    fav_brand: np.ndarray,
    items_by: _Sampler,
) -> _Queries:
    r = len(s_leaf)
    noun = cat.leaf_noun[s_leaf]
    n_syn = _SYN_COUNT[noun]
    use_syn = (rng.random(r) < cfg.synonym_rate) & (n_syn > 0)
    head = np.where(use_syn, _SYN_START[noun] + (rng.random(r) * n_syn).astype(np.int64), noun)
    keep_mod = rng.random(r) < cfg.modifier_query_rate
    color = np.where(
        rng.random(r) < cfg.attribute_query_rate,
        cat.leaf_colors[s_leaf, rng.integers(0, _LEAF_COLORS, r)],
        -1,
    )
    fam = cat.leaf_family[s_leaf]
    material = _FAMILY_MATERIALS[fam, (rng.random(r) * _FAMILY_N_MATERIALS[fam]).astype(np.int64)]
    material = np.where(rng.random(r) < 0.6 * cfg.attribute_query_rate, material, -1)
    leaf_brand = cat.item_brand[items_by.draw(0, s_leaf, rng.random(r))]
    brand = np.where(rng.random(r) < 0.5, fav_brand[s_user, 0], leaf_brand)
    brand = np.where(rng.random(r) < cfg.brand_query_rate, brand, -1)
    n_hot = len(cfg.hot_words)
    frame = pl.DataFrame(
        {
            "head": _gather(_HEADS, head),
            "mod": _gather(_MODIFIERS, cat.leaf_mod[s_leaf]),
            "keep_mod": keep_mod,
            "color": _gather(_COLORS, np.maximum(color, 0)),
            "has_color": color >= 0,
            "material": _gather(_MATERIALS, np.maximum(material, 0)),
            "has_material": material >= 0,
            "brand": _gather([b.lower() for b in cat.brand_names], np.maximum(brand, 0)),
            "has_brand": brand >= 0,
            "after": rng.random(r) < 0.25,
            "hot": _gather([w.lower() for w in cfg.hot_words] or [""], rng.integers(0, max(n_hot, 1), r)),
            "has_hot": rng.random(r) < (cfg.hot_word_query_rate if n_hot else 0.0),
            "hot_first": rng.random(r) < 0.5,
            "typo": rng.random(r) < cfg.typo_rate,
            "swap": rng.random(r) < 0.5,
            "u": rng.random(r),
        }
    )
    c = pl.col
    # one typo in the head word: swap characters p and p+1 (when they differ) or drop character p
    p = (c("u") * (c("head").str.len_chars() - 1)).floor().cast(pl.Int64)
    a, b = c("head").str.slice(p, 1), c("head").str.slice(p + 1, 1)
    swapped = pl.concat_str([c("head").str.slice(0, p), b, a, c("head").str.slice(p + 2)])
    dropped = pl.concat_str([c("head").str.slice(0, p), c("head").str.slice(p + 1)])
    head_expr = (
        pl.when(~c("typo")).then(c("head")).when(c("swap") & (a != b)).then(swapped).otherwise(dropped)
    )

    def attrs(after: bool) -> list[pl.Expr]:
        where = c("after") if after else ~c("after")
        return [pl.when(c(f"has_{a}") & where).then(c(a)) for a in ("color", "material")]

    query = pl.concat_str(
        [
            pl.when(c("has_hot") & c("hot_first")).then(c("hot")),
            pl.when(c("has_brand")).then(c("brand")),
            *attrs(False),
            pl.when(c("keep_mod")).then(c("mod")),
            head_expr,
            *attrs(True),
            pl.when(c("has_hot") & ~c("hot_first")).then(c("hot")),
        ],
        separator=" ",
        ignore_nulls=True,
    )
    return _Queries(frame.select(query.alias(S.QUERY)).to_series(), color, material, brand)


def generate_world(cfg: WorldConfig | str = "tiny", *, seed: int | None = None) -> Dataset:
    """Generate the synthetic world ``cfg`` (a preset name or a config); ``seed`` overrides the config's seed.

    Returns a validated :class:`Dataset` named ``synthetic-<preset>`` (``synthetic-custom`` for other configs)
    with ``source="synthetic"`` and ``meta={"world": <config as a dict>, "preset": <name>}``.
    """
    cfg, preset = resolve_config(cfg, seed)
    rng = np.random.default_rng(cfg.seed)
    cat = _build_catalog(cfg, rng)
    n, n_leaf, n_users = cfg.n_items, cfg.n_categories, cfg.n_users

    # popularity: Zipf over a random permutation of the items; cold items weigh zero
    rank_item = rng.permutation(n)
    pop = np.empty(n)
    pop[rank_item] = np.arange(1, n + 1, dtype=np.float64) ** -cfg.zipf_exponent
    pop_pct = np.empty(n)
    pop_pct[rank_item] = 1.0 - np.arange(n) / n
    pop[rng.choice(n, size=min(round(cfg.cold_start_share * n), n - 1), replace=False)] = 0.0

    # samplers: items sorted by leaf (leaf ids are ordered dept > family, so every level is contiguous)
    by_leaf = np.argsort(cat.item_leaf, kind="stable")
    sorted_leaf = cat.item_leaf[by_leaf]
    leaf_groups = (np.arange(n_leaf), cat.leaf_family, cat.leaf_dept, np.zeros(n_leaf, np.int64))
    n_groups = (n_leaf, len(_FAMILIES), len(_DEPTS), 1)
    items_by = _Sampler(
        by_leaf,
        pop[by_leaf],
        [_segments(g[sorted_leaf], m) for g, m in zip(leaf_groups, n_groups, strict=True)],
    )
    warm_leaf = np.bincount(cat.item_leaf, weights=(pop > 0).astype(np.float64), minlength=n_leaf) > 0
    leaves_by = _Sampler(
        np.arange(n_leaf),
        cat.leaf_weight * warm_leaf,
        [_segments(cat.leaf_dept, len(_DEPTS)), (np.array([0]), np.array([n_leaf]))],
    )

    # users: favourite leaves (mostly within one department), Dirichlet weights, favourite brands
    n_fav = cfg.favourite_categories
    zeros = np.zeros(n_users, np.int64)
    fav = np.empty((n_users, n_fav), np.int64)
    fav[:, 0] = leaves_by.draw(1, zeros, rng.random(n_users))
    for j in range(1, n_fav):
        near = leaves_by.draw(0, cat.leaf_dept[fav[:, 0]], rng.random(n_users))
        anywhere = leaves_by.draw(1, zeros, rng.random(n_users))
        fav[:, j] = np.where(rng.random(n_users) < cfg.preference_locality, near, anywhere)
    fav_cum = np.cumsum(rng.dirichlet(np.full(n_fav, cfg.preference_concentration), size=n_users), axis=1)
    brand_leaf = fav[np.arange(n_users)[:, None], rng.integers(0, n_fav, (n_users, 2))]
    fav_brand = cat.item_brand[items_by.draw(0, brand_leaf, rng.random((n_users, 2)))]

    def intent(users: np.ndarray) -> np.ndarray:
        """Short-term intent: a favourite leaf by the user's weights, or any leaf at intent_noise."""
        m = len(users)
        j = np.minimum((rng.random(m)[:, None] > fav_cum[users]).sum(axis=1), n_fav - 1)
        anywhere = leaves_by.draw(1, np.zeros(m, np.int64), rng.random(m))
        return np.where(rng.random(m) < cfg.intent_noise, anywhere, fav[users, j])

    # search sessions: intent and query
    s_user = np.repeat(np.arange(n_users), 1 + rng.poisson(cfg.sessions_per_user - 1.0, n_users))
    n_req = len(s_user)
    s_leaf = intent(s_user)
    q = _build_queries(cfg, cat, rng, s_user, s_leaf, fav_brand, items_by)

    # impressions: draws from the intent leaf / family / department / catalog, duplicates shown once
    k = cfg.impressions_per_search
    draws = 2 * k
    req = np.repeat(np.arange(n_req), draws)
    noise = cfg.impression_noise
    level = np.searchsorted(np.cumsum([1 - noise, noise / 2, noise / 4]), rng.random(len(req)), side="right")
    u = rng.random(len(req))
    item = np.empty(len(req), np.int64)
    for lv in range(_LEVELS):
        m = level == lv
        item[m] = items_by.draw(lv, leaf_groups[lv][s_leaf[req[m]]], u[m])
    dedup = np.argsort(req * n + item, kind="stable")
    key = (req * n + item)[dedup]
    keep = np.sort(dedup[np.concatenate([[True], key[1:] != key[:-1]])])
    req, item = req[keep], item[keep]
    page = _segmented_rank(req) < k
    req, item = req[page], item[page]
    # long-tail exposure: every warm item not shown yet is shown once, in a request of its own leaf if any
    missing = np.flatnonzero((np.bincount(item, minlength=n) == 0) & (pop > 0))
    if len(missing):
        by_req_leaf = np.argsort(s_leaf, kind="stable")
        r_start, r_end = _segments(s_leaf[by_req_leaf], n_leaf)
        ml = cat.item_leaf[missing]
        cnt = (r_end - r_start)[ml]
        pick = by_req_leaf[np.minimum(r_start[ml] + (rng.random(len(ml)) * cnt).astype(np.int64), n_req - 1)]
        req = np.concatenate([req, np.where(cnt > 0, pick, rng.integers(0, n_req, len(ml)))])
        item = np.concatenate([item, missing])

    # ranking: noisy log-relevance plus popularity
    il, ql = cat.item_leaf[item], s_leaf[req]
    match = np.select(
        [il == ql, cat.leaf_family[il] == cat.leaf_family[ql], cat.leaf_dept[il] == cat.leaf_dept[ql]],
        [0, 1, 2],
        3,
    )
    qc, qm, qb = q.color[req], q.material[req], q.brand[req]
    fit = (
        np.where(qc >= 0, np.where(cat.item_color[item] == qc, 1.5, 0.6), 1.0)
        * np.where(qm >= 0, np.where(cat.item_material[item] == qm, 1.5, 0.6), 1.0)
        * np.where(qb >= 0, np.where(cat.item_brand[item] == qb, 2.0, 0.7), 1.0)
    )
    rel = _LEVEL_RELEVANCE[match] * fit
    score = np.log(rel) + 0.5 * pop_pct[item] + cfg.ranking_noise * rng.standard_normal(len(item))
    order = np.lexsort((-score, req))
    req, item, match, rel = req[order], item[order], match[order], rel[order]
    pos = _segmented_rank(req)

    # clicks (position-based model), carts from clicks, purchases from carts
    m = len(item)
    user = s_user[req]
    fav_b = (cat.item_brand[item][:, None] == fav_brand[user]).any(axis=1)
    aff = cfg.brand_affinity_boost * fav_b
    attract = np.minimum(1.0, cfg.click_rate * rel * (0.6 + 0.8 * pop_pct[item]) * (1.0 + aff))
    click = rng.random(m) < attract * (1.0 + pos) ** -cfg.position_decay
    p_cart = np.minimum(1.0, cfg.cart_rate * np.where(match == 0, 1.0, 0.4) * (1.0 + aff / 2))
    cart = click & (rng.random(m) < p_cart)
    buy = cart & (rng.random(m) < np.minimum(1.0, cfg.purchase_rate * (1.0 + aff / 3)))

    # browse purchases (no request), topped up to min_purchases_per_user
    n_browse = np.maximum(
        rng.poisson(cfg.browse_purchases_per_user, n_users),
        cfg.min_purchases_per_user - np.bincount(user[buy], minlength=n_users),
    )
    b_user = np.repeat(np.arange(n_users), n_browse)
    b_item = items_by.draw(0, intent(b_user), rng.random(len(b_user)))

    # time: sessions in random order per user, events ordered impression < click < cart < purchase within one
    sess_user = np.concatenate([s_user, b_user])
    n_sess = len(sess_user)
    sess_seq = np.empty(n_sess, np.int64)
    sess_seq[np.lexsort((rng.random(n_sess), sess_user))] = np.arange(n_sess)
    ev_sess = np.concatenate([req, req[click], req[cart], req[buy], n_req + np.arange(len(b_user))])
    ev_item = np.concatenate([item, item[click], item[cart], item[buy], b_item])
    ev_pos = np.concatenate([pos, pos[click], pos[cart], pos[buy], np.zeros(len(b_user), np.int64)])
    ev_code = np.repeat(
        np.arange(4), [m, int(click.sum()), int(cart.sum()), int(buy.sum()) + len(b_user)]
    )  # index into S.EVENTS
    order = np.lexsort((ev_pos, ev_code, sess_seq[ev_sess]))
    ev_sess, ev_item, ev_code = ev_sess[order], ev_item[order], ev_code[order]
    ev_user = sess_user[ev_sess]
    n_ev = len(ev_sess)
    new_sess = np.concatenate([[True], ev_sess[1:] != ev_sess[:-1]])
    new_user = np.concatenate([[True], ev_user[1:] != ev_user[:-1]])
    sess_gap = 1800 + np.floor(rng.exponential(cfg.mean_session_gap_s, n_sess)).astype(np.int64)
    step = np.where(ev_code == 0, 1, rng.integers(5, 120, n_ev))
    gap = np.where(new_sess, sess_gap[ev_sess], step)
    gap[new_user] = 0
    cs = np.cumsum(gap)
    user_start = cfg.start_time + rng.integers(0, 30 * 86_400, n_users)
    ts = user_start[ev_user] + cs - cs[np.flatnonzero(new_user)][ev_user]

    # requests: time = first impression; ids in time order
    first = np.flatnonzero(new_sess & (ev_sess < n_req))
    req_ts = np.empty(n_req, np.int64)
    req_ts[ev_sess[first]] = ts[first]
    rid = np.empty(n_req, np.int64)
    rid[np.lexsort((s_user, req_ts))] = np.arange(n_req)
    c = pl.col
    interactions = pl.DataFrame(
        {
            S.USER_ID: ev_user,
            S.ITEM_ID: ev_item,
            S.TIMESTAMP: ts,
            S.EVENT: _gather(S.EVENTS, ev_code),
            S.REQUEST_ID: np.where(ev_sess < n_req, rid[np.minimum(ev_sess, n_req - 1)], -1),
        }
    ).with_columns(pl.when(c(S.REQUEST_ID) >= 0).then(c(S.REQUEST_ID)).alias(S.REQUEST_ID))
    interactions = interactions.sort([S.TIMESTAMP, S.USER_ID])

    # search log: requests with a click; target = first purchased, else carted, else clicked (by position)
    cl = np.flatnonzero(click)
    strength = 1 + cart[cl].astype(np.int64) + buy[cl]
    o = np.lexsort((pos[cl], -strength, req[cl]))
    cl, strength = cl[o], strength[o]
    head = _segmented_rank(req[cl]) == 0
    t_req, t_item, t_event = req[cl][head], item[cl][head], strength[head]
    t_user, t_ts = s_user[t_req], req_ts[t_req]
    bought = ev_code == 3
    big = int(ts.max()) + 1
    bought_keys = np.sort(ev_user[bought] * big + ts[bought])
    position = np.searchsorted(bought_keys, t_user * big + t_ts) - np.searchsorted(bought_keys, t_user * big)
    search_log = pl.DataFrame(
        {
            S.REQUEST_ID: rid[t_req],
            S.USER_ID: t_user,
            S.POSITION: position.astype(np.int64),
            S.TIMESTAMP: t_ts,
            S.QUERY: q.text.gather(t_req),
            S.ITEM_ID: t_item,
            S.EVENT: _gather(S.EVENTS, t_event),
        }
    ).sort(S.REQUEST_ID)

    return Dataset(
        name=f"synthetic-{preset}",
        items=cat.items,
        interactions=interactions,
        search_log=search_log if search_log.height else None,  # no click at all (degenerate configs)
        source="synthetic",
        meta={"world": asdict(cfg), "preset": preset},
    )


__all__ = [
    "DEFAULT_HOT_WORDS",
    "MAX_CATEGORIES",
    "PRESETS",
    "WorldConfig",
    "generate_world",
    "query_vocabulary",
    "resolve_config",
]
