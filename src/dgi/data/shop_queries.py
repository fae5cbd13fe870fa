"""Semi-synthetic shop queries written from product titles.

Amazon Beauty has purchase sequences and titles but no logged queries. To study
personalized product search on it, every example gets a short query derived from its
target's title the way shoppers type: lowercase, no punctuation, no sizes or counts,
usually no brand, the product type plus one or two descriptive words. The procedure is
hand-written (no learned model, no corpus statistics), so a query depends only on
(title, seed, example id) and the dataset can be rebuilt bit for bit. docs/datasets.md
describes it with examples.
"""

from __future__ import annotations

import hashlib
import html
import random
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

GENERIC_RATE = 0.10  # share of partial/generic queries ("nail polish", "hair care")
BRAND_RATE = 0.15  # share of specific queries that keep the brand
MAX_WORDS = 4
MAX_CANDIDATES = 12  # attributes come from the product name, not from spammy title tails
FALLBACK_QUERY = "beauty products"

# Product types by shop category; the category phrase doubles as the generic query.
_TYPES: dict[str, tuple[str, ...]] = {
    "hair care": (
        "shampoo", "dry shampoo", "conditioner", "leave in conditioner", "hair mask",
        "hair oil", "hair serum", "hair spray", "hairspray", "mousse", "pomade", "hair gel",
        "styling gel", "hair wax", "detangler", "hair color", "haircolor", "hair dye",
        "hair dryer", "blow dryer", "dryer", "flat iron", "curling iron", "curling wand",
        "hair iron", "iron", "straightener", "curler", "roller", "hot rollers", "hair clip",
        "clips", "bobby pins", "hair pins", "headband", "headwraps", "hair ties", "elastics",
        "scrunchie", "hair brush", "comb", "wig", "hair extensions", "clipper",
        "hair clipper", "trimmer", "beard oil", "styler", "waver", "diffuser", "shears",
        "paste", "hair paste", "volumizer", "heat protectant", "heat protector",
        "hair elixir",
    ),
    "skin care": (
        "moisturizer", "face cream", "night cream", "day cream", "eye cream", "cream",
        "serum", "cleanser", "face wash", "facial cleanser", "wash", "toner", "mask",
        "face mask", "sheet mask", "masque", "scrub", "peel", "exfoliator", "sunscreen",
        "sunblock", "self tanner", "lotion", "oil", "face oil", "gel", "eye gel", "mist",
        "essence", "bb cream", "cc cream", "wipes", "towelettes", "cleansing brush",
        "makeup remover", "eye makeup remover", "acne treatment", "spot treatment", "balm",
        "foam", "cleansing milk", "milk", "pads", "cloths", "patches", "salve", "ointment",
        "jelly", "hydrator", "facial steamer", "steamer",
    ),
    "body care": (
        "body wash", "shower gel", "body lotion", "body cream", "body butter", "butter",
        "cocoa butter", "shea butter", "body oil", "body scrub", "hand cream", "foot cream",
        "soap", "bar soap", "bath salt", "bubble bath", "bath bomb", "deodorant",
        "antiperspirant", "shaving cream", "aftershave", "after shave", "razor", "shaver",
        "wax strips", "wax", "loofah", "shower cap", "gloves", "mitt", "tanning mitt",
        "towel",
    ),
    "face makeup": (
        "foundation", "concealer", "primer", "face powder", "powder", "setting powder",
        "blush", "bronzer", "highlighter", "contour", "tinted moisturizer", "setting spray",
        "compact", "makeup", "corrector", "color corrector", "makeup sponge", "sponge",
        "makeup brush", "brush", "brush set", "applicator",
    ),
    "makeup bags": (
        "makeup bag", "cosmetic bag", "makeup case", "train case", "bag", "organizer",
        "makeup organizer", "pouch",
    ),
    "eye makeup": (
        "eyeshadow", "eye shadow", "eyeshadow palette", "palette", "eyeliner", "eye liner",
        "liquid liner", "liner", "kohl", "mascara", "pencil", "eye pencil", "eyebrow",
        "eyebrow pencil", "brow pencil", "brow gel", "brow kit", "false eyelashes",
        "eyelashes", "lashes", "lash glue", "eyelash glue", "eyelash adhesive",
        "eyelash curler", "sharpener",
    ),
    "lip makeup": (
        "lipstick", "lip gloss", "gloss", "lip liner", "lip stain", "stain", "lip color",
        "lipcolor", "lip balm", "lip plumper", "lip tint", "tint", "lip shimmer",
    ),
    "nail care": (
        "nail polish", "polish", "nail lacquer", "lacquer", "nail enamel", "enamel",
        "gel polish", "top coat", "base coat", "sealer", "nail art", "nail stickers",
        "nail decals", "rhinestones", "stamping plate", "image plate", "nail file", "file",
        "buffer", "cuticle oil", "cuticle pusher", "cuticle nipper", "nipper",
        "nail clipper", "polish remover", "nail polish remover", "nail lamp", "uv lamp",
        "nail tips", "nail glue", "manicure set",
    ),
    "fragrance": (
        "perfume", "parfum", "eau de parfum", "eau de toilette", "eau de cologne",
        "cologne", "body mist", "body spray", "fragrance", "edp", "edt",
    ),
    "beauty tools": ("tweezers", "scissors", "mirror", "epilator", "massager", "swabs"),
}
# Head words that name a product only when nothing more specific is in the title.
_WEAK_TYPES: tuple[str, ...] = (
    "spray", "set", "gift set", "kit", "collection", "system", "treatment", "remover", "duo",
    "bar", "case",
)
# Title wording -> what shoppers type.
_ALIASES = {
    "parfum": "perfume", "eau de parfum": "perfume", "edp": "perfume", "edt": "eau de toilette",
    "eau de cologne": "cologne", "polish": "nail polish", "lacquer": "nail polish",
    "nail lacquer": "nail polish", "enamel": "nail polish", "nail enamel": "nail polish",
    "eye shadow": "eyeshadow", "eye liner": "eyeliner", "hairspray": "hair spray",
    "haircolor": "hair color", "iron": "hair iron", "masque": "mask", "lipcolor": "lip color",
    "after shave": "aftershave",
}
# Brands longer than one word, hand-picked from frequent titles...
_BRANDS = (
    "loreal paris", "maybelline new york", "burts bees", "china glaze", "sally hansen",
    "john frieda", "yes to", "coastal scents", "too faced", "bare escentuals",
    "physicians formula", "peter thomas roth", "paul mitchell", "creative nail", "mary kay",
    "vidal sassoon", "the body shop", "st ives", "herbal essences", "urban decay",
    "bumble and bumble", "natures gate", "la roche posay", "avalon organics",
    "earth therapeutics", "banana boat", "the balm", "derma e", "dr bronners",
    "australian gold", "betty dain", "queen helene", "wet n wild", "color club",
    "laura mercier", "bath and body works", "bath body works", "bh cosmetics", "lime crime",
    "desert essence", "john masters organics", "sexy hair", "bed head", "tigi bed head",
    "jane iredale", "etude house", "manic panic", "hot tools", "estee lauder",
    "nubian heritage", "tree hut", "soft n style", "clean and clear", "crabtree and evelyn",
    "mario badescu", "real techniques", "harmony gelish", "american crew", "deva curl",
    "elizabeth arden", "paris hilton", "calvin klein", "dolce and gabbana", "ralph lauren",
    "dr hauschka", "alba botanica",
)
# ...and the shorter form shoppers type where it differs.
_BRAND_QUERIES = {
    "loreal paris": "loreal", "maybelline new york": "maybelline", "creative nail": "cnd",
    "the body shop": "body shop", "bath and body works": "bath body works",
    "john masters organics": "john masters", "tigi bed head": "bed head",
    "crabtree and evelyn": "crabtree evelyn", "harmony gelish": "gelish",
    "dolce and gabbana": "dolce gabbana",
}
_DESCRIPTIVE = frozenset("""
    black brown white red pink blue green purple violet nude gold golden silver coral plum
    beige ivory clear bronze berry rose copper auburn blonde brunette grey gray ash dark light
    medium deep natural neutral warm cool matte shimmer shimmering glitter metallic glossy
    sheer satin velvet cream creamy liquid waterproof lasting long wear smudge proof dry oily
    sensitive normal combination acne curly frizzy damaged colored fine thick thin straight
    wavy volume volumizing smoothing smooth strengthening repair repairing anti aging wrinkle
    firming lifting hydrating moisturizing nourishing brightening whitening soothing calming
    exfoliating clarifying cleansing purifying detox gentle daily night day organic vegan
    unscented scented hypoallergenic mineral herbal argan coconut shea aloe vitamin collagen
    retinol hyaluronic tea tree lavender vanilla citrus lemon orange mint peppermint charcoal
    clay honey almond jojoba keratin biotin cocoa olive avocado rosehip cucumber
    mens womens kids baby unisex ceramic tourmaline ionic cordless electric travel
    mini large small compact oil free sulfate paraben spf tinted foaming gel hydra radiant
    glow illuminating pore control heat protect protection shine frizz curl color
    pure professional salon anti_aging anti_wrinkle self_tanning
""".split())
_STOPWORDS = frozenset("""
    a an the and or of for with by from in on at to as is it its this that your you our
    my me all new plus per each ea w inc co ltd tm r misc item assorted various vary may no
    one two three four five six seven eight nine ten dozen double single de du la le et
    made usa korea japan france italy quality best great premium genuine brand
""".split())
# Size, volume and count words: dropped wherever they appear.
_UNITS = frozenset("""
    oz ounce ounces fl fluid ml milliliter milliliters millilitre l liter liters litre
    g gr gram grams mg kg lb lbs pound pounds cc count ct pack packs pk pcs pc piece pieces
    inch inches mm cm ft yard yards sheet sheets capsule capsules caplet caplets tablet
    tablets softgels pair pairs watt watts volt volts size sizes value bonus jar jars bottle
    bottles tube tubes pump refill container containers package packaging supply month
""".split())
_UNIT_PATTERN = "|".join(sorted((re.escape(unit) for unit in _UNITS), key=len, reverse=True))
_NUMBER = r"(?:\d+(?:[.,/]\d+)*|\.\d+)"
_SIZE = re.compile(rf"{_NUMBER}\s*-?\s*(?:fl\.?\s*)?(?:{_UNIT_PATTERN}|x|colou?rs?|shades?)\b"
                   rf"|\b(?:pack|set|box|case) of \d+")
_ACRONYM = re.compile(r"\b(?:[a-z]\.){2,}")
_MAKEUP = re.compile(r"\bmake[\s-]+up\b")
_SEGMENT = re.compile(  # where titles change subject: "Shampoo, 8 oz" / "Candy by Prada"
    r"[,;:|()\[\]{}~*+]|(?<=[a-z]{3})\.\s| - |\sw/| for | with | by | featuring ")
_HAS_DIGIT = re.compile(r"\S*\d\S*")  # model numbers, shade codes, leftover quantities
_WORD = re.compile(r"[a-z]+(?:_[a-z]+)?")
# "anti aging" stays one attribute: alone, "anti" means nothing.
_COMPOUND = re.compile(r"\b(anti|non|self|multi)[\s-]+(?=[a-z])")
_NORMAL = {"women": "womens", "woman": "womens", "men": "mens", "colour": "color",
           "creme": "cream"}


def _phrase_table() -> dict[tuple[str, ...], tuple[str, str, bool]]:
    """Phrase tokens -> (query form, category, weak); plurals ("palettes") map to the singular."""
    entries = [(phrase, (_ALIASES.get(phrase, phrase), category, False))
               for category, phrases in _TYPES.items() for phrase in phrases]
    entries += [(phrase, (phrase, FALLBACK_QUERY, True)) for phrase in _WEAK_TYPES]
    table = {tuple(phrase.split()): entry for phrase, entry in entries}
    for phrase, entry in entries:
        for plural in (f"{phrase}s", f"{phrase}es"):
            table.setdefault(tuple(plural.split()), entry)
    return table


_PHRASES = _phrase_table()
_LONGEST_PHRASE = max(len(tokens) for tokens in _PHRASES)
_TYPE_WORDS = frozenset(word for tokens in _PHRASES for word in tokens)
_BRAND_TOKENS = {tuple(brand.split()): _BRAND_QUERIES.get(brand, brand) for brand in _BRANDS}


@dataclass(frozen=True)
class TitleParts:
    """What the query builder needs from one title; computed once per title."""

    brand: str  # query form of the brand, "" if none was recognised
    product_type: str  # query form of the head product type, "" if none
    category: str  # generic two-word query for the type ("hair care")
    attributes: tuple[str, ...]  # candidate descriptive words, title order
    weights: tuple[float, ...]  # sampling weights: known descriptive words first


def _segments(title: str) -> list[list[str]]:
    """Lowercase, unescape, drop sizes, and split where titles change subject."""
    text = unicodedata.normalize("NFKD", html.unescape(title).lower())
    text = "".join(char for char in text if not unicodedata.combining(char))
    text = _ACRONYM.sub(lambda match: match.group().replace(".", ""), text)
    text = _MAKEUP.sub("makeup", text)
    text = _SIZE.sub(" ", text.replace("'", "").replace("\u2019", ""))
    text = _COMPOUND.sub(r"\1_", _HAS_DIGIT.sub(" ", text))
    segments = []
    for part in _SEGMENT.split(f" {text} "):
        words = [_NORMAL.get(word, word) for word in _WORD.findall(part.replace("-", " "))
                 if (len(word) > 1 or word in {"e", "n"}) and _UNITS.isdisjoint(word.split("_"))]
        if words:
            segments.append(words)
    return segments


def _is_common(word: str) -> bool:
    """A vocabulary word (or compound such as "anti_aging"), hence not a brand name."""
    return word in _TYPE_WORDS or word in _DESCRIPTIVE or word in _STOPWORDS or "_" in word


def _find_brand(words: list[str], total: int) -> tuple[int, str]:
    """Number of leading brand tokens and the brand's query form.

    A listed multi-word brand wins; otherwise the first word is the brand unless it is
    a product or descriptive word, and the second joins it when it is not one either
    (sub-brands such as "revlon colorstay"). A one-word title (`total` words) has none.
    """
    for length in range(min(4, len(words)), 1, -1):
        query = _BRAND_TOKENS.get(tuple(words[:length]))
        if query is not None:
            return length, query
    if not words or _is_common(words[0]) or total < 2:
        return 0, ""
    if len(words) > 2 and not _is_common(words[1]):
        return 2, f"{words[0]} {words[1]}"
    return 1, words[0]


def _find_type(segments: list[list[str]]) -> tuple[int, int, int] | None:
    """(segment, start, length) of the head type: the last specific type of the first
    segment that has one (product names end with their head noun), else the last weak
    type of the first segment that has one."""
    weak = None
    for index, words in enumerate(segments):
        last = last_weak = None
        start = 0
        while start < len(words):
            for length in range(min(_LONGEST_PHRASE, len(words) - start), 0, -1):
                entry = _PHRASES.get(tuple(words[start:start + length]))
                if entry is not None:
                    if entry[2]:
                        last_weak = (index, start, length)
                    else:
                        last = (index, start, length)
                    start += length
                    break
            else:
                start += 1
        if last is not None:
            return last
        weak = weak or last_weak
    return weak


@lru_cache(maxsize=65_536)
def parse_title(title: str) -> TitleParts:
    """Split a title into brand, product type, category and attribute candidates."""
    segments = _segments(title)
    if not segments:
        return TitleParts("", "", FALLBACK_QUERY, (), ())
    brand_length, brand = _find_brand(segments[0], sum(map(len, segments)))
    brand_words = set(segments[0][:brand_length]) | set(brand.split())
    segments[0] = segments[0][brand_length:]
    found = _find_type(segments)
    product_type, category = "", FALLBACK_QUERY
    if found is not None:
        index, start, length = found
        product_type, category, _ = _PHRASES[tuple(segments[index][start:start + length])]
        del segments[index][start:start + length]
    content = [word for words in segments for word in words
               if len(word) > 1 and word not in _STOPWORDS and word not in brand_words]
    if not product_type and content:
        # No known type: the product name's last word is most likely its head noun.
        head = [word for word in segments[0] if word in content] or content
        product_type = ([word for word in head if word not in _DESCRIPTIVE] or head)[-1]
    taken = brand_words | set(product_type.split())
    attributes = tuple(dict.fromkeys(w for w in content if w not in taken))[:MAX_CANDIDATES]
    if category == "fragrance":
        male = {"mens", "him", "homme", "cologne"} & set(content + product_type.split())
        category = "mens fragrance" if male else "womens fragrance"
    weights = tuple(3.0 if word in _DESCRIPTIVE else 1.0 for word in attributes)
    return TitleParts(brand, product_type, category, attributes, weights)


def _rng(seed: int, key: str) -> random.Random:
    """A generator seeded from (seed, key) alone, so no other example or process state matters."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _sample(rng: random.Random, words: tuple[str, ...], weights: tuple[float, ...],
            count: int) -> list[str]:
    """Weighted sampling without replacement, returned in title order."""
    pool = list(range(len(words)))
    chosen: list[int] = []
    for _ in range(min(count, len(pool))):
        pick = rng.choices(pool, weights=[weights[i] for i in pool])[0]
        pool.remove(pick)
        chosen.append(pick)
    return [words[i] for i in sorted(chosen)]


def make_query(title: str, seed: int, key: str) -> str:
    """A 2-4 word shop query for a product title; `key` (the example id) varies it per example.

    About 10% are partial or generic (the product type alone when it has two words,
    else its category such as "hair care"); the rest are one or two attributes plus the
    product type, with the brand in front about 15% of the time. Titles without any
    usable word get "beauty products".
    """
    parts = parse_title(title)
    rng = _rng(seed, key)
    if not parts.product_type:
        return parts.category
    head = parts.product_type.replace("_", " ").split()
    if rng.random() < GENERIC_RATE:
        return " ".join(head) if len(head) >= 2 and rng.random() < 0.5 else parts.category
    brand = parts.brand.split() if parts.brand and rng.random() < BRAND_RATE else []
    if len(brand) + len(head) >= MAX_WORDS:
        brand = []
    attributes = []
    for word in _sample(rng, parts.attributes, parts.weights, rng.choice((1, 2))):
        if len(brand) + len(head) + len(attributes) + word.count("_") + 1 <= MAX_WORDS:
            attributes.extend(word.split("_"))
    words = brand + attributes + head
    if len(words) < 2 and parts.brand and not brand:
        words = parts.brand.split()[:MAX_WORDS - len(words)] + words
    if len(words) < 2:
        words += [word for word in parts.category.split() if word not in words]
    return " ".join(words)
