"""Readable, unique-enough VM hostnames: ``<prefix><adjective>-<noun>``, e.g. ``hushed-lantern``.

The original builds names the same way and keeps them short: the noun has at most 10 letters and the
adjective at most ``14 - len(noun)``, so the part after the prefix is at most 15 characters with the
hyphen. Both word lists are our own: common, inoffensive English words of lowercase ASCII letters, with
no proper names and no word in both lists.

Uniqueness is not guaranteed here; the caller checks a new name against the store and draws again.
"""

from __future__ import annotations

import logging
import random

__all__ = ["ADJECTIVES", "MAX_NAME_LENGTH", "MAX_NOUN_LENGTH", "NOUNS", "combinations", "generate_name"]

log = logging.getLogger(__name__)

MAX_NOUN_LENGTH = 10
"""The longest noun, in letters."""

MAX_NAME_LENGTH = 15
"""The longest ``adjective-noun`` part of a name, hyphen included."""

ADJECTIVES: tuple[str, ...] = (
    # colours and looks
    "amber", "azure", "beige", "blue", "bronze", "coral", "crimson", "cyan", "golden", "green",
    "grey", "indigo", "ivory", "jade", "lilac", "lime", "maroon", "mauve", "navy", "ochre",
    "pink", "plum", "purple", "red", "rosy", "ruby", "rusty", "scarlet", "silver", "tan",
    "teal", "violet", "pastel", "tinted", "striped", "spotted", "glossy", "shiny", "gilded",
    # weather, seasons and places
    "alpine", "arctic", "balmy", "breezy", "chilly", "cloudy", "dewy", "foggy", "frosty", "hazy",
    "icy", "misty", "rainy", "snowy", "stormy", "sunny", "sunlit", "windy", "wintry", "vernal",
    "tropical", "polar", "lunar", "solar", "starry", "cosmic", "coastal", "marine", "nautical", "tidal",
    "rural", "urban", "rustic", "scenic", "sandy", "rocky", "grassy", "leafy", "mossy", "woody",
    "floral", "muddy", "dusty", "arid", "lush", "verdant", "hilly", "boggy", "pebbly",
    # temper and manner
    "able", "agile", "alert", "amiable", "bold", "brave", "bright", "brisk", "bubbly", "calm",
    "candid", "careful", "casual", "chatty", "cheerful", "cheery", "civil", "clever", "content", "cordial",
    "crafty", "curious", "dapper", "daring", "dashing", "deft", "devoted", "diligent", "dreamy", "eager",
    "earnest", "easygoing", "fearless", "festive", "fond", "frank", "friendly", "frugal", "funny", "gentle",
    "genial", "gifted", "glad", "graceful", "gracious", "happy", "hardy", "hearty", "helpful", "honest",
    "hopeful", "humble", "jolly", "jovial", "joyful", "keen", "kind", "kindly", "lively", "loyal",
    "lucky", "mellow", "merry", "mighty", "modest", "nimble", "noble", "patient", "peaceful", "peppy",
    "perky", "placid", "playful", "plucky", "poised", "polite", "proud", "prudent", "quiet", "relaxed",
    "serene", "sincere", "smiling", "spirited", "spry", "steady", "stoic", "thrifty", "tranquil",
    "trusty", "upbeat", "valiant", "witty", "zany", "zealous", "zesty", "chipper", "gallant",
    # size, shape and texture
    "ample", "bouncy", "bumpy", "compact", "crisp", "curly", "curved", "dainty", "dense", "fluffy",
    "fuzzy", "giant", "grand", "hollow", "jumbo", "large", "lean", "little", "lofty", "long",
    "narrow", "oval", "petite", "plush", "round", "rugged", "silky", "sleek", "slender",
    "slim", "smooth", "snug", "soft", "spiral", "square", "sturdy", "supple", "tall", "tiny",
    "trim", "vast", "velvety", "wavy", "wide", "wiry", "woolly", "woven", "knitted", "braided",
    # speed, sound and light
    "hasty", "nippy", "prompt", "quick", "rapid", "speedy", "swift", "zippy", "fleet", "slow",
    "hushed", "muted", "silent", "still", "humming", "musical", "melodic", "rhythmic", "lyrical", "sonic",
    "glowing", "gleaming", "radiant", "shining", "sparkly", "vivid", "lucid", "luminous", "dazzling",
    "glinting",
    # age and time
    "ancient", "early", "fresh", "modern", "new", "old", "timely", "young", "vintage", "classic",
    "novel", "recent", "prior", "annual", "daily", "nightly", "weekly", "evening", "morning", "midday",
    # quality and worth
    "basic", "choice", "clean", "clear", "deluxe", "elegant", "exact", "exquisite", "fancy", "fine",
    "first", "good", "great", "ideal", "lovely", "major", "neat", "nice", "nifty", "optimal",
    "perfect", "polished", "precise", "premium", "pretty", "prime", "proper", "pure", "quaint", "rare",
    "regal", "royal", "select", "sharp", "simple", "smart", "solid", "sound", "stable", "superb",
    "sterling", "tidy", "true", "unique", "useful", "valid", "vital", "worthy", "dandy", "splendid",
    # taste and smell
    "buttery", "fizzy", "honeyed", "minty", "peppery", "salty",
    "savory", "sugary", "sweet", "tangy", "toasty", "zingy", "citrusy", "malty",
    # other everyday words
    "airy", "awake", "busy", "cozy", "cute", "dear", "deep", "direct", "distant", "dry",
    "easy", "empty", "equal", "even", "fair", "famous", "far", "fast", "firm", "fit",
    "flat", "flying", "free", "full", "handy", "heavy", "hidden", "high", "idle", "inner",
    "jazzy", "just", "level", "light", "local", "lone", "loud", "magic", "mild", "minor",
    "mobile", "mutual", "normal", "odd", "open", "outer", "plain", "public", "quirky",
    "ready", "real", "rich", "ripe", "roaming", "robust", "rolling", "safe", "secret", "sheer",
    "short", "shy", "sly", "small", "soaring", "spare", "steep", "subtle", "super", "sure",
    "tame", "tender", "twin", "upright", "warm", "wild", "winged", "wise", "wooden", "apt",
    "big", "coy", "cool", "epic", "few", "fun", "low", "raw", "wee", "wet",
)  # fmt: skip

NOUNS: tuple[str, ...] = (
    # trees and plants
    "acorn", "aspen", "bamboo", "basil", "birch", "blossom", "cactus", "cedar", "clover", "daisy",
    "elm", "fern", "hazel", "ivy", "jasmine", "laurel", "lily", "lotus", "maple", "moss",
    "oak", "orchid", "palm", "pine", "poppy", "sequoia", "spruce", "thistle", "tulip", "willow",
    "lavender", "heather", "juniper", "magnolia", "marigold", "primrose", "sage", "thyme", "yarrow", "fennel",
    # landscape and water
    "bay", "brook", "canyon", "cliff", "coast", "cove", "crater", "creek", "delta", "desert",
    "dune", "field", "fjord", "forest", "geyser", "glacier", "glen", "grove", "harbor", "hill",
    "island", "lagoon", "lake", "meadow", "mesa", "oasis", "ocean", "orchard", "pond", "prairie",
    "reef", "ridge", "river", "shore", "spring", "stream", "summit", "tundra", "valley", "volcano",
    "bluff", "marsh", "plateau", "rapids", "inlet", "islet", "knoll", "ravine", "estuary", "atoll",
    # sky and weather
    "aurora", "breeze", "cloud", "comet", "dawn", "dusk", "eclipse", "frost", "galaxy", "horizon",
    "meteor", "moon", "nebula", "orbit", "planet", "rain", "rainbow", "snow", "star", "sunrise",
    "sunset", "thunder", "twilight", "zephyr", "mist", "drizzle", "monsoon", "cosmos", "quasar", "pulsar",
    # birds
    "crane", "dove", "eagle", "falcon", "finch", "gull", "heron", "kestrel", "lark", "magpie",
    "osprey", "owl", "parrot", "pelican", "penguin", "puffin", "quail", "raven", "robin", "sparrow",
    "swan", "wren", "starling", "toucan", "albatross", "cardinal", "hawk", "kiwi", "plover", "ibis",
    # other animals
    "badger", "bison", "camel", "cheetah", "dolphin", "otter", "gecko", "hedgehog", "koala", "lemur",
    "lion", "lizard", "llama", "lobster", "lynx", "meerkat", "moose", "narwhal", "ocelot", "panda",
    "rabbit", "salmon", "seal", "sloth", "squirrel", "tiger", "turtle", "walrus", "whale", "zebra",
    "alpaca", "beetle", "bumblebee", "cricket", "firefly", "ladybird", "octopus", "pony", "tortoise",
    "wombat",
    # food and drink
    "almond", "apple", "apricot", "bagel", "barley", "berry", "biscuit", "butter", "caramel",
    "chestnut", "cider", "cocoa", "cookie", "cupcake", "donut", "fig", "ginger", "grape",
    "honey", "lemon", "mango", "melon", "muffin", "nectar", "nutmeg", "olive", "pancake", "peach",
    "pear", "pecan", "pepper", "pretzel", "pumpkin", "radish", "saffron", "toffee", "walnut", "waffle",
    # household things
    "basket", "blanket", "bucket", "candle", "carpet", "cupboard", "cushion", "kettle", "ladder", "lamp",
    "lantern", "locket", "mirror", "mitten", "needle", "pillow", "quilt", "ribbon", "scarf", "spoon",
    "teapot", "teacup", "thimble", "window", "bonnet", "button", "jacket", "sweater", "slipper", "umbrella",
    # tools, craft and music
    "anchor", "anvil", "arrow", "banjo", "bell", "bugle", "cello", "chime", "compass", "drum",
    "easel", "fiddle", "flute", "guitar", "harp", "hammer", "kite", "lute", "magnet", "oboe",
    "paddle", "pencil", "piano", "prism", "quill", "rocket", "sextant", "trumpet", "violin", "whistle",
    "chisel", "trowel", "spindle", "tuba", "banner", "beacon", "canvas", "ukulele", "xylophone", "zither",
    # places and buildings
    "abbey", "arbor", "attic", "avenue", "barn", "bridge", "cabin", "castle", "chapel", "cottage",
    "gazebo", "garden", "lighthouse", "mill", "pagoda", "pavilion", "plaza", "tower", "turret", "village",
    # materials and stones
    "agate", "amethyst", "basalt", "cobalt", "copper", "cotton", "crystal", "flint", "garnet", "granite",
    "gravel", "jewel", "linen", "marble", "nickel", "onyx", "opal", "pebble", "quartz", "sapphire",
    "silk", "slate", "stone", "timber", "topaz", "velvet", "wool", "emerald", "pewter", "obsidian",
    # travel and movement
    "balloon", "boat", "canoe", "caravan", "ferry", "glider", "kayak", "raft", "sailboat", "sled",
    "voyage", "wagon", "yacht", "journey", "ramble", "trail", "path", "lane", "harness", "saddle",
    # everyday objects and ideas
    "atlas", "badge", "bead", "book", "candor", "chalk", "cipher", "echo", "ember", "feather",
    "fossil", "globe", "haiku", "jigsaw", "kernel", "ledger", "legend", "melody", "notion", "origami",
    "pocket", "puzzle", "riddle", "satchel", "shell", "sonnet", "spark", "sprout", "token", "wish",
)  # fmt: skip

# For each room left after a noun (14 - len(noun)), the adjectives that fit in it.
_FITTING: dict[int, tuple[str, ...]] = {
    room: tuple(adjective for adjective in ADJECTIVES if len(adjective) <= room)
    for room in {MAX_NAME_LENGTH - 1 - len(noun) for noun in NOUNS}
}


def generate_name(rng: random.Random, prefix: str = "") -> str:
    """Draw a name: a random noun, then a random adjective short enough to go with it.

    Args:
        rng: the source of randomness (seed it for reproducible names).
        prefix: prepended as is (a pool's ``prefix`` setting).

    Returns:
        ``prefix + adjective + "-" + noun``.
    """
    noun = rng.choice(NOUNS)
    adjective = rng.choice(_FITTING[MAX_NAME_LENGTH - 1 - len(noun)])
    return f"{prefix}{adjective}-{noun}"


def combinations() -> int:
    """How many different names ``generate_name`` can return (for one prefix)."""
    return sum(len(_FITTING[MAX_NAME_LENGTH - 1 - len(noun)]) for noun in NOUNS)
