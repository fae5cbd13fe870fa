"""Deterministic synthetic e-commerce dataset with realistic texts, users and a time split.

Item texts are built from category-specific vocabularies so a real sentence encoder
places related products close together; users draw sessions from sparse topic
preferences mixed with Zipf popularity, so both the query and the history carry signal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from dgi.data.loaders import SPLITS, Dataset
from dgi.data.schema import Example, Item


@dataclass(frozen=True)
class _Category:
    name: str
    generic: tuple[str, ...]  # one-word search terms for the whole category
    types: tuple[str, ...]
    attributes: tuple[str, ...]
    brands: tuple[str, ...]
    variants: tuple[str, ...]
    colored: bool


_COLORS = ("black", "white", "navy", "red", "blue", "green", "grey", "beige", "pink",
           "purple", "orange", "yellow", "teal", "olive", "burgundy")

_CATEGORIES = (
    _Category(
        "skin care", ("skincare", "face", "skin"),
        ("face moisturizer", "facial cleanser", "face serum", "sunscreen", "eye cream",
         "sheet mask", "toner", "night cream", "lip balm"),
        ("hydrating", "fragrance-free", "for sensitive skin", "with hyaluronic acid",
         "vitamin C", "SPF 30", "SPF 50", "oil-free", "non-comedogenic", "anti-aging", "vegan",
         "dermatologist tested", "with retinol", "mattifying"),
        ("Luminelle", "Dermaloft", "Aquaveil", "Solenne", "Purabloom", "Skinthera", "Velmora",
         "Calmiere"),
        ("30 ml", "50 ml", "100 ml", "150 ml", "travel size", "value pack"),
        False),
    _Category(
        "hair care", ("hair", "haircare"),
        ("shampoo", "conditioner", "hair mask", "hair oil", "dry shampoo", "leave-in spray",
         "styling gel", "hair serum"),
        ("sulfate-free", "for curly hair", "for dry hair", "volumizing", "anti-dandruff",
         "color-safe", "with argan oil", "keratin", "frizz control", "silicone-free",
         "moisturizing", "strengthening"),
        ("Tressana", "Capilo", "Maneva", "Silkroot", "Hairloom", "Bristwell", "Curlora"),
        ("250 ml", "400 ml", "500 ml", "1 liter", "travel size", "refill pouch"),
        False),
    _Category(
        "makeup", ("makeup", "cosmetics"),
        ("lipstick", "mascara", "liquid foundation", "eyeliner", "eyeshadow palette", "blush",
         "concealer", "setting powder", "lip gloss", "brow pencil"),
        ("long-lasting", "waterproof", "matte", "satin finish", "full coverage", "lightweight",
         "cruelty-free", "smudge-proof", "buildable", "shimmer", "transfer-proof", "vegan"),
        ("Rougeline", "Glamora", "Veloura", "Pixie Lane", "Chromabelle", "Lashique",
         "Kohlette"),
        ("light shade", "medium shade", "deep shade", "mini size", "full size"),
        True),
    _Category(
        "fragrance", ("perfume", "fragrance", "scent"),
        ("eau de parfum", "eau de toilette", "body mist", "perfume oil", "cologne",
         "solid perfume", "fragrance gift set"),
        ("floral", "woody", "citrus", "fresh", "oriental", "musky", "vanilla", "aquatic",
         "spicy", "unisex", "for women", "for men", "long-lasting"),
        ("Aurelisse", "Noctavia", "Ambrelle", "Sillage Noir", "Fleurance", "Odoramo",
         "Velvetine"),
        ("30 ml", "50 ml", "75 ml", "100 ml", "travel spray"),
        False),
    _Category(
        "running shoes", ("running", "sneakers", "shoes"),
        ("trail running shoe", "road running shoe", "racing flat", "stability running shoe",
         "cushioned running shoe", "running sandal", "track spike"),
        ("waterproof", "lightweight", "breathable", "carbon plate", "wide fit",
         "responsive foam", "grippy outsole", "reflective", "neutral", "max cushion",
         "zero drop", "recycled materials"),
        ("Nordvik", "Stridera", "Velocita", "Trailhawk", "Pacewell", "Runsmith", "Altivo"),
        ("men's size 8", "men's size 9", "men's size 10", "men's size 11", "women's size 6",
         "women's size 7", "women's size 8", "women's size 9"),
        True),
    _Category(
        "camping", ("camping", "outdoor", "hiking"),
        ("dome tent", "sleeping bag", "sleeping pad", "camping stove", "headlamp",
         "hiking backpack", "camping chair", "water filter", "camping lantern"),
        ("ultralight", "waterproof", "3-season", "4-season", "compact", "insulated",
         "rechargeable", "windproof", "packable", "durable", "easy setup", "for 2 persons",
         "for 4 persons"),
        ("Summitra", "Pinecrest", "Wildmark", "Cairnfield", "Basecamp Co", "Emberline",
         "Ridgeway"),
        ("regular", "long", "900 g", "1.5 kg", "2 kg", "40 liters", "65 liters"),
        True),
    _Category(
        "kitchen", ("kitchen", "cookware"),
        ("chef's knife", "nonstick frying pan", "cast iron skillet", "cutting board",
         "stand mixer", "blender", "saucepan", "knife set", "food storage containers",
         "air fryer"),
        ("dishwasher safe", "stainless steel", "nonstick", "induction compatible", "BPA-free",
         "ergonomic handle", "oven safe", "high speed", "compact", "professional grade",
         "easy clean"),
        ("Cucinara", "Ferrovia", "Panterra", "Saltbrook", "Kitchworth", "Olivetta",
         "Brasserie Home"),
        ("20 cm", "24 cm", "28 cm", "1.5 liter", "2 liter", "set of 3", "set of 5"),
        True),
    _Category(
        "coffee", ("coffee", "espresso"),
        ("espresso machine", "coffee grinder", "whole bean coffee", "ground coffee",
         "coffee capsules", "pour-over dripper", "French press", "milk frother",
         "cold brew maker"),
        ("dark roast", "medium roast", "light roast", "single origin", "organic", "fair trade",
         "decaf", "burr", "programmable", "barista grade", "arabica", "low acidity"),
        ("Crema Norte", "Beanwright", "Tostado", "Kaffelund", "Roastory", "Mocaya",
         "Percolo"),
        ("250 g", "500 g", "1 kg", "10 capsules", "50 capsules", "1 liter", "350 ml"),
        False),
    _Category(
        "toys", ("toy", "toys", "kids"),
        ("building blocks set", "plush toy", "jigsaw puzzle", "remote control car",
         "board game", "doll house", "action figure", "wooden train set", "science kit"),
        ("educational", "for toddlers", "ages 3+", "ages 8+", "battery operated", "non-toxic",
         "wooden", "STEM", "glow in the dark", "collectible", "family game"),
        ("Tumblit", "Brickaroo", "Playvale", "Gigglewood", "Kidora", "Toylane", "Wonderpeg"),
        ("100 pieces", "500 pieces", "1000 pieces", "small", "large", "deluxe edition"),
        True),
    _Category(
        "phone accessories", ("phone", "smartphone", "mobile"),
        ("phone case", "screen protector", "wireless charger", "USB-C cable", "power bank",
         "car phone mount", "wireless earbuds", "charging adapter"),
        ("shockproof", "MagSafe compatible", "fast charging", "slim", "tempered glass",
         "braided", "10000 mAh", "20000 mAh", "noise cancelling", "transparent",
         "anti-scratch", "for iPhone 15", "for Galaxy S24"),
        ("Voltaris", "Cellmate", "Chargio", "Gripton", "Zentek", "Armorly", "Lumacell"),
        ("1 m", "2 m", "2-pack", "3-pack", "15 W", "30 W", "65 W"),
        True),
    _Category(
        "fitness", ("fitness", "gym", "workout"),
        ("yoga mat", "adjustable dumbbells", "resistance bands", "kettlebell", "foam roller",
         "jump rope", "pull-up bar", "gym bag"),
        ("non-slip", "extra thick", "eco-friendly", "adjustable", "portable", "heavy duty",
         "high density", "for home gym", "with carrying strap"),
        ("Flexora", "Ironvale", "Coreline", "Kinetiq", "Pulsefit", "Zenmotion"),
        ("4 kg", "8 kg", "12 kg", "6 mm", "10 mm", "set of 5"),
        True),
    _Category(
        "pet supplies", ("pet", "dog", "cat"),
        ("dry dog food", "cat litter", "dog leash", "cat scratching post", "pet bed",
         "dog chew toy", "wet cat food", "aquarium filter"),
        ("grain-free", "for puppies", "for senior cats", "clumping", "odor control",
         "orthopedic", "durable", "natural ingredients", "high protein", "washable",
         "reflective"),
        ("Pawsome", "Whiskerly", "Barkwell", "Furlong", "Petalis", "Houndry"),
        ("2 kg", "5 kg", "12 kg", "small", "medium", "large"),
        False),
    _Category(
        "bedding", ("bedding", "bedroom", "bed"),
        ("duvet cover", "fitted sheet", "bed pillow", "weighted blanket", "throw blanket",
         "mattress topper"),
        ("100% cotton", "linen", "hypoallergenic", "cooling", "machine washable",
         "organic cotton", "breathable", "down alternative", "400 thread count",
         "memory foam"),
        ("Dreamhaven", "Linenfold", "Slumbra", "Cozyloft", "Nuvola", "Hearthly"),
        ("single", "double", "queen", "king", "2-pack"),
        True),
    _Category(
        "audio", ("audio", "music", "sound"),
        ("over-ear headphones", "bluetooth speaker", "soundbar", "turntable",
         "studio monitors", "portable radio"),
        ("noise cancelling", "wireless", "waterproof", "30-hour battery", "hi-res audio",
         "foldable", "bass boost", "voice assistant", "multi-room"),
        ("Sonivo", "Auralis", "Decibelle", "Bassford", "Echora", "Tonewell"),
        ("compact", "standard", "pro", "2nd generation", "20 W", "50 W"),
        True),
)

_EPOCH = 1_672_531_200  # 2023-01-01T00:00:00Z
_SPAN_SECONDS = 365 * 24 * 3600
_NEW_ITEM_BOOST = 3.0  # new (zero-shot) items get launch attention after the train cutoff
_P_PREFERENCE = 0.35  # next item drawn from the user's long-term preferences
_P_EXPLORE = 0.08  # next item drawn from global popularity; the rest follows the last item
_P_TYPO = 0.07
_REDRAWS = 3  # redraws of an immediate repeat; a few repeats stay, as in real logs
_P_SHUFFLE = 0.15


@dataclass(frozen=True)
class _Spec:
    """Structured description of one generated item, kept to derive queries from."""

    category: int
    type: int
    brand: int
    attributes: tuple[str, ...]
    variant: str
    color: str | None

    def text(self) -> str:
        category = _CATEGORIES[self.category]
        parts = [f"{category.brands[self.brand]} {category.types[self.type]}",
                 *self.attributes, self.variant]
        if self.color is not None:
            parts.append(self.color)
        return ", ".join(parts)


def _make_catalog(n_items: int, rnd: random.Random) -> list[_Spec]:
    """Draw item specs with (almost always) unique texts, retrying a few times on clashes."""
    weights = [rnd.uniform(0.5, 1.5) for _ in _CATEGORIES]
    specs: list[_Spec] = []
    seen: set[str] = set()
    for c in rnd.choices(range(len(_CATEGORIES)), weights, k=n_items):
        category = _CATEGORIES[c]
        for _ in range(10):
            spec = _Spec(
                category=c,
                type=rnd.randrange(len(category.types)),
                brand=rnd.randrange(len(category.brands)),
                attributes=tuple(rnd.sample(category.attributes, rnd.choice((1, 2, 2, 3)))),
                variant=rnd.choice(category.variants),
                color=rnd.choice(_COLORS) if category.colored else None,
            )
            if spec.text() not in seen:
                break
        seen.add(spec.text())
        specs.append(spec)
    return specs


def _typo(word: str, rnd: random.Random) -> str:
    i = rnd.randrange(len(word) - 1)
    kind = rnd.randrange(3)
    if kind == 0:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1:]
    return word[:i + 1] + word[i] + word[i + 1:]  # double a letter


def _make_query(spec: _Spec, rnd: random.Random) -> str:
    """A 2-4 word shopper query: product type (or a partial/generic word) plus a few cues."""
    category = _CATEGORIES[spec.category]
    length = rnd.choice((2, 3, 3, 4))
    roll = rnd.random()
    type_words = category.types[spec.type].split()
    if roll < 0.6:
        core = type_words[-length:]
    elif roll < 0.85:
        core = type_words[-1:]  # partial: just the head noun
    else:
        core = [rnd.choice(category.generic)]
    cues = [attribute.split() for attribute in spec.attributes]
    if rnd.random() < 0.25:
        cues.append(category.brands[spec.brand].split())
    if spec.color is not None and rnd.random() < 0.3:
        cues.append([spec.color])
    if rnd.random() < 0.1:
        cues.append(spec.variant.split())
    rnd.shuffle(cues)
    words: list[str] = []
    for cue in cues:
        if len(words) + len(cue) + len(core) <= length:
            words += cue
    words += core
    if len(words) < 2:
        words.insert(0, rnd.choice(category.generic))
    if rnd.random() < _P_SHUFFLE:
        rnd.shuffle(words)
    if rnd.random() < _P_TYPO:
        long_words = [i for i, word in enumerate(words) if len(word) >= 4]
        if long_words:
            i = rnd.choice(long_words)
            words[i] = _typo(words[i], rnd)
    return " ".join(words).lower()


class _GroupSampler:
    """Popularity-weighted sampling inside item groups, vectorised over many draws.

    Every group's within-group CDF is stored shifted by the group id, so one
    `searchsorted` serves a whole batch of draws from different groups. Empty groups
    (e.g. a brand whose items are all unreleased) fall back to their parent group.
    """

    def __init__(self, member_group: np.ndarray, member_item: np.ndarray, weights: np.ndarray,
                 parent: np.ndarray) -> None:
        order = np.lexsort((member_item, member_group))
        groups, items = member_group[order], member_item[order]
        w = weights[items]
        n_groups = len(parent)
        ends = np.searchsorted(groups, np.arange(n_groups), side="right")
        starts = np.searchsorted(groups, np.arange(n_groups), side="left")
        cumulative = np.cumsum(w)
        before = np.concatenate(([0.0], cumulative))[starts]
        totals = np.concatenate(([0.0], cumulative))[ends] - before
        safe_totals = np.where(totals > 0, totals, 1.0)
        self._values = groups + (cumulative - before[groups]) / safe_totals[groups]
        self._items = items
        # Index of each group's last positive-weight member guards against float spill-over.
        positive = np.flatnonzero(w > 0)
        self._last = positive[np.searchsorted(positive, ends, side="left") - 1]
        self._resolved = np.arange(n_groups)
        for group in range(n_groups):  # parents have lower ids, so one pass suffices
            if totals[group] <= 0:
                self._resolved[group] = self._resolved[parent[group]]

    def sample(self, groups: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        groups = self._resolved[groups]
        index = np.searchsorted(self._values, groups + uniforms, side="right")
        return self._items[np.minimum(index, self._last[groups])]


def _zipf_weights(n_items: int, zipf: float, rng: np.random.Generator) -> np.ndarray:
    weights = np.empty(n_items)
    weights[rng.permutation(n_items)] = np.arange(1, n_items + 1, dtype=np.float64) ** -zipf
    return weights


@dataclass(frozen=True)
class _Groups:
    """Item groups used for sampling: 0 = everything, 1 + c = category c, then one group
    per (category, product type) and per (category, brand)."""

    category: np.ndarray  # [n_items] category index
    type: np.ndarray  # [n_items] (category, type) group id
    brand: np.ndarray  # [n_items] (category, brand) group id
    type_offset: np.ndarray  # [n_categories] first (category, type) group id
    brand_offset: np.ndarray  # [n_categories] first (category, brand) group id
    parent: np.ndarray  # [n_groups] fallback group when a group has no available item

    @classmethod
    def of(cls, specs: list[_Spec]) -> _Groups:
        n_categories = len(_CATEGORIES)
        type_offset = 1 + n_categories + np.cumsum([0] + [len(c.types) for c in _CATEGORIES])
        brand_offset = type_offset[-1] + np.cumsum([0] + [len(c.brands) for c in _CATEGORIES])
        parent = np.zeros(brand_offset[-1], dtype=np.int64)
        for c in range(n_categories):
            parent[type_offset[c]:type_offset[c + 1]] = 1 + c
            parent[brand_offset[c]:brand_offset[c + 1]] = 1 + c
        category = np.array([s.category for s in specs], dtype=np.int64)
        return cls(
            category=category,
            type=type_offset[category] + np.array([s.type for s in specs], dtype=np.int64),
            brand=brand_offset[category] + np.array([s.brand for s in specs], dtype=np.int64),
            type_offset=type_offset[:-1],
            brand_offset=brand_offset[:-1],
            parent=parent,
        )

    def sampler(self, weights: np.ndarray) -> _GroupSampler:
        n_items = len(self.category)
        member_group = np.concatenate([np.zeros(n_items, dtype=np.int64), 1 + self.category,
                                       self.type, self.brand])
        return _GroupSampler(member_group, np.tile(np.arange(n_items), 4), weights, self.parent)


@dataclass(frozen=True)
class _Preferences:
    """Sparse user tastes: 1-3 liked categories, each with a favourite brand and type."""

    liked: np.ndarray  # [n_users, 3] category indices
    n_liked: np.ndarray  # [n_users] how many of the 3 slots are used
    cumulative: np.ndarray  # [n_users, 3] cumulative slot probabilities
    brand: np.ndarray  # [n_users, 3] favourite (category, brand) group
    type: np.ndarray  # [n_users, 3] favourite (category, type) group

    @classmethod
    def draw(cls, n_users: int, groups: _Groups, popularity: np.ndarray,
             rng: np.random.Generator) -> _Preferences:
        n_categories = len(_CATEGORIES)
        mass = np.bincount(groups.category, weights=popularity, minlength=n_categories)
        # Gumbel top-3: popular categories are liked more often, without repetition.
        keys = np.log(mass + 1e-12) + rng.gumbel(size=(n_users, n_categories))
        liked = np.argsort(-keys, axis=1)[:, :3]
        n_liked = rng.integers(1, 4, n_users)
        affinity = rng.dirichlet(np.ones(3), n_users)
        affinity[np.arange(3) >= n_liked[:, None]] = 0.0
        n_brands = np.array([len(c.brands) for c in _CATEGORIES])
        n_types = np.array([len(c.types) for c in _CATEGORIES])
        return cls(
            liked=liked,
            n_liked=n_liked,
            cumulative=np.cumsum(affinity / affinity.sum(axis=1, keepdims=True), axis=1),
            brand=groups.brand_offset[liked]
            + (rng.random(liked.shape) * n_brands[liked]).astype(np.int64),
            type=groups.type_offset[liked]
            + (rng.random(liked.shape) * n_types[liked]).astype(np.int64),
        )


def _user_lengths(n_users: int, n_examples: int, rng: np.random.Generator) -> np.ndarray:
    """Heavy-tailed interactions per user, at least one each, summing to n_examples."""
    activity = rng.lognormal(0.0, 0.8, n_users)
    return 1 + rng.multinomial(n_examples - n_users, activity / activity.sum())


def _timestamps(user: np.ndarray, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """Non-decreasing integer times per user, each user active in a random sub-window."""
    draws = rng.random(user.size)
    draws = draws[np.lexsort((draws, user))]  # sorted within each (contiguous) user block
    start, width = rng.random(n_users), rng.uniform(0.2, 1.0, n_users)
    fraction = start[user] * (1.0 - width[user]) + width[user] * draws
    return _EPOCH + np.floor(fraction * _SPAN_SECONDS).astype(np.int64)


def _time_split(user: np.ndarray, step: np.ndarray, valid_share: float, test_share: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps, chronological order and split (0 train, 1 valid, 2 test) per interaction."""
    n = user.size
    times = _timestamps(user, int(user[-1]) + 1, rng)
    chronological = np.lexsort((step, user, times))
    n_test, n_valid = round(test_share * n), round(valid_share * n)
    split = np.zeros(n, dtype=np.int64)
    split[chronological[n - n_test - n_valid:]] = 1
    split[chronological[n - n_test:]] = 2
    return times, chronological, split


def _simulate(lengths: np.ndarray, after_cutoff: np.ndarray, groups: _Groups,
              prefs: _Preferences, samplers: tuple[_GroupSampler, _GroupSampler],
              rng: np.random.Generator) -> np.ndarray:
    """Item index of every interaction; step k of all active users is drawn at once."""
    starts = np.cumsum(lengths) - lengths
    sequence = np.empty(int(lengths.sum()), dtype=np.int64)

    def draw(group: np.ndarray, after: np.ndarray) -> np.ndarray:
        uniforms = rng.random(group.size)
        return np.where(after, samplers[1].sample(group, uniforms),
                        samplers[0].sample(group, uniforms))

    for k in range(int(lengths.max())):
        users = np.flatnonzero(lengths > k)
        index = starts[users] + k
        mode, sub = rng.random(users.size), rng.random(users.size)
        slot = (rng.random(users.size)[:, None] > prefs.cumulative[users]).sum(axis=1)
        slot = np.minimum(slot, prefs.n_liked[users] - 1)  # round-off must not pick an empty slot
        # From preferences: favourite brand 35%, favourite type 25%, whole category 40%.
        group = np.where(sub < 0.35, prefs.brand[users, slot],
                         np.where(sub < 0.6, prefs.type[users, slot],
                                  1 + prefs.liked[users, slot]))
        if k > 0:
            previous = sequence[index - 1]
            # Related to the last item: same type 55%, same brand 25%, same category 20%.
            related = np.where(sub < 0.55, groups.type[previous],
                               np.where(sub < 0.8, groups.brand[previous],
                                        1 + groups.category[previous]))
            group = np.where(mode < _P_PREFERENCE, group,
                             np.where(mode < _P_PREFERENCE + _P_EXPLORE, 0, related))
        after = after_cutoff[index]
        picked = draw(group, after)
        if k > 0:  # damp immediate repeats so the last history item is rarely the answer
            for attempt in range(_REDRAWS):
                clash = np.flatnonzero(picked == previous)
                if clash.size == 0:
                    break
                # The last attempt widens to the category: tiny groups may hold one item.
                wider = 1 + groups.category[previous[clash]]
                picked[clash] = draw(group[clash] if attempt < _REDRAWS - 1 else wider,
                                     after[clash])
        sequence[index] = picked
    return sequence


def generate_synthetic(
    n_items: int = 20_000,
    n_examples: int = 150_000,
    zipf: float = 1.1,
    seed: int = 0,
    *,
    zero_shot_share: float = 0.04,
    no_query_share: float = 0.15,
    no_history_share: float = 0.15,
    max_history: int = 20,
    mean_user_examples: float = 12.0,
    valid_share: float = 0.1,
    test_share: float = 0.1,
    name: str = "synthetic",
) -> Dataset:
    """Generate a dataset; the same arguments always give byte-identical saved files.

    Splits are by global time (train < valid < test). Zero-shot items are "launched" at
    the train cutoff: they never occur in train, but are targets (and history) later.
    Examples without history always keep their query, so none is empty on both sides.
    """
    if n_items < 2 or n_examples < 1:
        raise ValueError("need at least 2 items and 1 example")
    if not 0 <= zero_shot_share < 1 or not 0 < valid_share + test_share < 1:
        raise ValueError("shares must lie in [0, 1) and leave room for train")
    rng = np.random.default_rng(seed)
    rnd = random.Random(seed)

    specs = _make_catalog(n_items, rnd)
    groups = _Groups.of(specs)
    popularity = _zipf_weights(n_items, zipf, rng)
    n_zero_shot = min(n_items - 1, round(zero_shot_share * n_items))
    zero_shot = np.zeros(n_items, dtype=bool)
    zero_shot[rng.choice(n_items, n_zero_shot, replace=False)] = True
    samplers = (groups.sampler(np.where(zero_shot, 0.0, popularity)),
                groups.sampler(np.where(zero_shot, _NEW_ITEM_BOOST * popularity, popularity)))

    n_users = max(1, min(n_examples, round(n_examples / mean_user_examples)))
    lengths = _user_lengths(n_users, n_examples, rng)
    user = np.repeat(np.arange(n_users), lengths)
    step = np.arange(n_examples) - (np.cumsum(lengths) - lengths)[user]
    times, chronological, split = _time_split(user, step, valid_share, test_share, rng)
    prefs = _Preferences.draw(n_users, groups, popularity, rng)
    sequence = _simulate(lengths, split > 0, groups, prefs, samplers, rng)

    # Anonymous sessions lose their history (first steps have none anyway); pure
    # recommendation examples lose their query, only where a history remains.
    drop_history = max(0.0, no_history_share * n_examples - n_users) / max(1, n_examples - n_users)
    no_history = (step == 0) | (rng.random(n_examples) < drop_history)
    query_rate = min(1.0, no_query_share * n_examples / max(1, int((~no_history).sum())))
    no_query = ~no_history & (rng.random(n_examples) < query_rate)

    width = max(6, len(str(n_items - 1)))
    item_ids = [f"I{i:0{width}d}" for i in range(n_items)]
    items = [Item(id=item_ids[i], text=spec.text(),
                  fields={"category": _CATEGORIES[spec.category].name,
                          "type": _CATEGORIES[spec.category].types[spec.type],
                          "brand": _CATEGORIES[spec.category].brands[spec.brand]})
             for i, spec in enumerate(specs)]
    splits: dict[str, list[Example]] = {split_name: [] for split_name in SPLITS}
    for i in chronological.tolist():
        k, target = int(step[i]), int(sequence[i])
        history = () if no_history[i] else tuple(
            item_ids[j] for j in sequence[i - min(k, max_history):i].tolist())
        splits[SPLITS[split[i]]].append(Example(
            target=item_ids[target],
            history=history,
            query=None if no_query[i] else _make_query(specs[target], rnd),
            timestamp=float(times[i]),
            id=f"u{int(user[i]):06d}-{k}",
        ))

    train_targets = {example.target for example in splits["train"]}
    meta = {
        "generator": "dgi.data.synthetic.generate_synthetic",
        "parameters": {
            "n_items": n_items, "n_examples": n_examples, "zipf": zipf, "seed": seed,
            "zero_shot_share": zero_shot_share, "no_query_share": no_query_share,
            "no_history_share": no_history_share, "max_history": max_history,
            "mean_user_examples": mean_user_examples, "valid_share": valid_share,
            "test_share": test_share,
        },
        "counts": {
            "items": n_items,
            "categories": len(_CATEGORIES),
            "users": n_users,
            "examples": {split_name: len(examples) for split_name, examples in splits.items()},
            "no_query_examples": int(no_query.sum()),
            "no_history_examples": int(no_history.sum()),
            "zero_shot_items": n_zero_shot,
            "items_never_train_target": n_items - len(train_targets),
        },
        "zero_shot_item_ids": [item_ids[i] for i in np.flatnonzero(zero_shot).tolist()],
    }
    return Dataset(name=name, items=items, splits=splits, meta=meta)
