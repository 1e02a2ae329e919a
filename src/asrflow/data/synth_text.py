"""Seeded English sentence generator for a synthetic speech corpus.

Sentences are lower case words from fixed, hand-written word lists (no digits,
hyphens or punctuation), joined by single spaces, 5 to 14 words long.  They are
meant to be spoken by espeak-ng and used to train a recognizer and an n-gram
language model.  The word lists live in the package data file
``synth_words.yaml`` next to this module; the grammar (templates, plurals,
articles) is here.

Determinism: every random choice goes through one ``random.Random(seed)``
instance per generator, all word lists are tuples in a fixed order (the order
of ``synth_words.yaml``), and no set or dict is ever iterated to make a choice,
so the output depends only on the seed and that file (not on
``PYTHONHASHSEED``, the process or the machine).

Public API:
    vocabulary() -> list[str]
    SentenceGenerator(seed).sentence() -> str
    generate_splits(sizes, seed) -> dict[str, list[str]]
    sentence_words(sentences) -> set[str]
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import yaml

__all__ = [
    "MIN_WORDS",
    "MAX_WORDS",
    "SentenceGenerator",
    "generate_splits",
    "sentence_words",
    "vocabulary",
]

MIN_WORDS = 5
MAX_WORDS = 14


# --------------------------------------------------------------------------
# Word lists (data: synth_words.yaml)
# --------------------------------------------------------------------------

WORDS_FILE = "synth_words.yaml"
_WORD_RE = re.compile(r"^[a-z']+$")


def _load_word_lists() -> dict[str, Any]:
    """Read synth_words.yaml, shipped as package data next to this module."""
    text = resources.files(__package__).joinpath(WORDS_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{WORDS_FILE}: expected a mapping of list name to words")
    return data


_WORD_LISTS = _load_word_lists()
_USED_KEYS: set[str] = set()


def _entry(key: str) -> Any:
    if key not in _WORD_LISTS:
        raise ValueError(f"{WORDS_FILE}: missing list {key!r}")
    _USED_KEYS.add(key)
    return _WORD_LISTS[key]


def _words(key: str) -> tuple[str, ...]:
    """The words of list ``key`` (a block of whitespace-separated words), duplicates dropped (first wins)."""
    text = _entry(key)
    if not isinstance(text, str):
        raise ValueError(f"{WORDS_FILE}: {key!r} must be a block of space-separated words, "
                         f"got {type(text).__name__}")
    words = text.split()
    bad = [w for w in words if not _WORD_RE.match(w)]
    if bad or not words:
        raise ValueError(f"{WORDS_FILE}: {key!r} is empty or has words outside [a-z']: {bad}")
    return tuple(dict.fromkeys(words))


def _groups(key: str, width: int) -> tuple[tuple[str, ...], ...]:
    """List ``key`` (``["a b c d", "e f g h", ...]``) as tuples of ``width`` words each."""
    items = _entry(key)
    if not isinstance(items, list) or not items:
        raise ValueError(f"{WORDS_FILE}: {key!r} must be a non-empty list of word groups")
    out: list[tuple[str, ...]] = []
    for item in items:
        parts = tuple(item.split()) if isinstance(item, str) else ()
        if len(parts) != width or not all(_WORD_RE.match(w) for w in parts):
            raise ValueError(f"{WORDS_FILE}: {key!r} entry {item!r} is not {width} words of [a-z']")
        out.append(parts)
    return tuple(out)


NAMES = _words("names")
PEOPLE = _words("people")  # singular; plurals are derived by _plural()
ANIMALS = _words("animals")
THINGS = _words("things")
PLACES = _words("places")
ADJ_ANY = _words("adj_any")  # people, animals and things
ADJ_LIVING = _words("adj_living")  # people and animals
ADJ_THING = _words("adj_thing")
COLORS = _words("colors")

NUMBERS = _words("numbers")
SMALL_NUMBERS = NUMBERS[:11]  # two .. twelve

ORDINALS = _words("ordinals")  # first .. twentieth
# Day-of-month phrases, 1st .. 31st.
DAY_ORDINALS: tuple[str, ...] = (
    ORDINALS + tuple("twenty " + o for o in ORDINALS[:9]) + ("thirtieth", "thirty first")
)

WEEKDAYS = _words("weekdays")
MONTHS = _words("months")
SEASONS = _words("seasons")
PARTS_OF_DAY = _words("parts_of_day")  # first three are daytime
MEALS = _words("meals")

# Verbs: (base, past, third person singular, -ing).
VERBS_T = _groups("verbs_t", 4)  # transitive
VERBS_I = _groups("verbs_i", 4)  # intransitive
DITRANSITIVE_PAST = _words("ditransitive_past")
REPORT_PAST = _words("report_past")
INTENT_PAST = _words("intent_past")
MODALS = _words("modals")

CONJUNCTIONS = _words("conjunctions")
WH_WORDS = _words("wh_words")
INTENSIFIERS = _words("intensifiers")
ADVERBS = _words("adverbs")
PREPOSITIONS = _words("prepositions")
DET_SG = _words("det_sg")
DET_PL = _words("det_pl")
# The number ('sg', 'pl', 'i') drives verb agreement in _was/_is/_present, so it stays with the grammar.
SUBJECT_PRONOUNS: tuple[tuple[str, str], ...] = (
    ("he", "sg"), ("she", "sg"), ("we", "pl"), ("they", "pl"), ("you", "pl"), ("i", "i"),
)
OBJECT_PRONOUNS = _words("object_pronouns")
TIME_UNITS = _words("time_units")

# Words that appear only as literal parts of templates and time phrases (for vocabulary()).
_LITERALS = _words("literals")

_unknown = sorted(set(_WORD_LISTS) - _USED_KEYS)
if _unknown:
    raise ValueError(f"{WORDS_FILE}: unknown lists {_unknown} (the code reads none of them)")
del _unknown

# Vowel-initial words pronounced with a consonant sound, and silent-h words.
_A_NOT_AN = frozenset("useful unusual usual unique uniform university one european".split())
_AN_NOT_A = frozenset("hour honest honor heir".split())

_IRREGULAR_PLURALS = {
    "child": "children", "mouse": "mice", "goose": "geese", "sheep": "sheep",
    "deer": "deer", "fish": "fish", "wolf": "wolves", "calf": "calves",
    "knife": "knives", "loaf": "loaves", "leaf": "leaves", "shelf": "shelves",
    "wife": "wives", "scarf": "scarves", "potato": "potatoes",
    "tomato": "tomatoes", "person": "people", "tooth": "teeth", "foot": "feet",
}


def _plural(noun: str) -> str:
    """Return the English plural of one of this module's nouns."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith("man"):
        return noun[:-3] + "men"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


PEOPLE_PL = tuple(_plural(w) for w in PEOPLE)
ANIMALS_PL = tuple(_plural(w) for w in ANIMALS)
THINGS_PL = tuple(_plural(w) for w in THINGS)

ADJ_FOR_LIVING = ADJ_ANY + ADJ_LIVING
ADJ_FOR_ANIMAL = ADJ_ANY + ADJ_LIVING + COLORS
ADJ_FOR_THING = ADJ_ANY + ADJ_THING + COLORS


def _fix_articles(words: list[str]) -> list[str]:
    """Turn the article ``a`` into ``an`` before a vowel sound (in place; returned)."""
    for i in range(len(words) - 1):
        if words[i] != "a":
            continue
        nxt = words[i + 1]
        vowel = nxt[0] in "aeiou"
        if nxt in _A_NOT_AN:
            vowel = False
        elif nxt in _AN_NOT_A:
            vowel = True
        if vowel:
            words[i] = "an"
    return words


# --------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------

Phrase = list[str]


class SentenceGenerator:
    """Deterministic random English sentences.

    ``SentenceGenerator(seed)`` owns a private ``random.Random(seed)``; each call
    to :meth:`sentence` returns the next sentence of that seed's stream (a str of
    5..14 lower-case words separated by single spaces, no punctuation).  Two
    generators with the same seed yield the same stream in any process.
    """

    def __init__(self, seed: int) -> None:
        """Create a generator whose whole output is fixed by the integer ``seed``."""
        self._rng = random.Random(seed)
        self._templates: tuple[tuple[Callable[[], Phrase], int], ...] = (
            (self._t_past_transitive, 8),
            (self._t_counted_objects, 5),
            (self._t_did_question, 4),
            (self._t_animals_intransitive, 5),
            (self._t_habit, 5),
            (self._t_future, 4),
            (self._t_progressive, 5),
            (self._t_wh_question, 4),
            (self._t_negative, 4),
            (self._t_description, 5),
            (self._t_because, 5),
            (self._t_there_were, 4),
            (self._t_modal, 4),
            (self._t_pair_of_names, 3),
            (self._t_imperative, 3),
            (self._t_intent, 4),
            (self._t_present_intransitive, 4),
            (self._t_be_ing_question, 3),
            (self._t_ditransitive, 4),
            (self._t_reported, 4),
            (self._t_date, 3),
        )
        self._template_fns = tuple(fn for fn, _ in self._templates)
        self._template_weights = tuple(w for _, w in self._templates)

    # -- public --------------------------------------------------------------

    def sentence(self) -> str:
        """Return the next sentence: 5..14 lower-case words joined by single spaces."""
        for _ in range(1000):
            fn = self._rng.choices(self._template_fns, weights=self._template_weights)[0]
            words = _fix_articles(" ".join(fn()).split())
            if MIN_WORDS <= len(words) <= MAX_WORDS:
                return " ".join(words)
        raise RuntimeError("could not build a sentence of allowed length")  # pragma: no cover

    # -- small helpers -------------------------------------------------------

    def _c(self, seq: tuple[str, ...]) -> str:
        return self._rng.choice(seq)

    def _p(self, prob: float) -> bool:
        return self._rng.random() < prob

    def _adj(self, pool: tuple[str, ...], prob: float = 0.5) -> Phrase:
        """Zero, one or (rarely) two adjectives from ``pool``."""
        if not self._p(prob):
            return []
        first = self._c(pool)
        if self._p(0.15):
            second = self._c(COLORS)
            if second != first:
                return [first, second]
        return [first]

    def _quantity(self) -> Phrase:
        r = self._rng.random()
        if r < 0.45:
            return [self._c(NUMBERS)]
        if r < 0.55:
            return [self._c(("a few", "a dozen", "a hundred"))]
        return [self._c(DET_PL)]

    # -- noun phrases --------------------------------------------------------

    def _person_sg(self) -> Phrase:
        if self._p(0.4):
            return [self._c(NAMES)]
        return [self._c(DET_SG), *self._adj(ADJ_FOR_LIVING), self._c(PEOPLE)]

    def _subject(self, pronouns: bool = True) -> tuple[Phrase, str]:
        """A subject noun phrase and its number: 'sg', 'pl' or 'i'."""
        r = self._rng.random()
        if r < 0.5:
            return self._person_sg(), "sg"
        if r < 0.68:
            return [*self._quantity(), *self._adj(ADJ_FOR_LIVING), self._c(PEOPLE_PL)], "pl"
        if r < 0.78:
            return [self._c(DET_SG), *self._adj(ADJ_FOR_ANIMAL), self._c(ANIMALS)], "sg"
        if r < 0.88 or not pronouns:
            return [*self._quantity(), *self._adj(ADJ_FOR_ANIMAL), self._c(ANIMALS_PL)], "pl"
        word, number = self._rng.choice(SUBJECT_PRONOUNS)
        return [word], number

    def _thing_sg(self, prob: float = 0.5) -> Phrase:
        return [self._c(DET_SG), *self._adj(ADJ_FOR_THING, prob), self._c(THINGS)]

    def _thing_pl(self, prob: float = 0.5) -> Phrase:
        return [*self._quantity(), *self._adj(ADJ_FOR_THING, prob), self._c(THINGS_PL)]

    def _object(self) -> Phrase:
        r = self._rng.random()
        if r < 0.45:
            return self._thing_sg()
        if r < 0.75:
            return self._thing_pl()
        if r < 0.83:
            return [self._c(DET_SG), *self._adj(ADJ_FOR_ANIMAL), self._c(ANIMALS)]
        if r < 0.88:
            return [*self._quantity(), *self._adj(ADJ_FOR_ANIMAL), self._c(ANIMALS_PL)]
        if r < 0.96:
            return self._person_sg()
        return [*self._quantity(), *self._adj(ADJ_FOR_LIVING), self._c(PEOPLE_PL)]

    def _place(self) -> Phrase:
        """A prepositional phrase such as 'near the old bridge'."""
        adj = self._adj(ADJ_FOR_THING, 0.25)
        return [self._c(PREPOSITIONS), "the", *adj, self._c(PLACES)]

    # -- time phrases --------------------------------------------------------

    def _date(self) -> Phrase:
        return ["on the", self._c(DAY_ORDINALS), "of", self._c(MONTHS)]

    def _time_past(self) -> Phrase:
        r = self._rng.randrange(14)
        if r == 0:
            return ["yesterday"]
        if r == 1:
            return ["last", self._c(("night", "week", "month", "year") + WEEKDAYS + SEASONS)]
        if r == 2:
            return ["this", self._c(("morning", "afternoon", "evening"))]
        if r == 3:
            return [self._c(("early this morning", "late last night", "yesterday " + self._c(PARTS_OF_DAY[:3])))]
        if r == 4:
            return ["on", self._c(WEEKDAYS)]
        if r == 5:
            return ["in", self._c(MONTHS)]
        if r == 6:
            return self._date()
        if r == 7:
            return [self._c(SMALL_NUMBERS), self._c(("minutes", "hours", "days", "weeks", "months", "years")), "ago"]
        if r == 8:
            return ["a", self._c(TIME_UNITS), "ago"]
        if r == 9:
            return [self._c(("before", "after")), self._c(MEALS)]
        if r == 10:
            return ["at", self._c(("noon", "midnight", "dawn", "dusk"))]
        if r == 11:
            return ["during the", self._c(("storm", "night", "festival", "holiday") + SEASONS)]
        if r == 12:
            return ["in the", self._c(SEASONS)]
        return ["today"]

    def _time_future(self) -> Phrase:
        r = self._rng.randrange(9)
        if r == 0:
            return ["tomorrow", *([self._c(PARTS_OF_DAY[:3])] if self._p(0.5) else [])]
        if r == 1:
            return ["next", self._c(("week", "month", "year") + WEEKDAYS + SEASONS)]
        if r == 2:
            return [self._c(("later today", "tonight", "soon", "this evening"))]
        if r == 3:
            return ["in", self._c(SMALL_NUMBERS), self._c(("minutes", "hours", "days", "weeks"))]
        if r == 4:
            return ["on", self._c(WEEKDAYS)]
        if r == 5:
            return self._date()
        if r == 6:
            return [self._c(("before", "after")), self._c(MEALS)]
        if r == 7:
            return ["in", self._c(MONTHS)]
        return ["at", self._c(("noon", "midnight", "dawn", "dusk"))]

    def _time_habit(self) -> Phrase:
        r = self._rng.randrange(6)
        if r == 0:
            return ["every", self._c(PARTS_OF_DAY + ("day", "week") + WEEKDAYS + SEASONS)]
        if r == 1:
            return [self._c(("once", "twice")), "a", self._c(("day", "week", "month", "year"))]
        if r == 2:
            return ["in the", self._c(PARTS_OF_DAY[:3])]
        if r == 3:
            return [self._c(("before", "after")), self._c(MEALS + ("school", "work"))]
        if r == 4:
            return ["at", self._c(("night", "noon", "dawn", "dusk"))]
        return ["in", self._c(("spring", "summer", "autumn", "winter"))]

    # -- verb helpers --------------------------------------------------------

    def _vt(self) -> tuple[str, ...]:
        return self._rng.choice(VERBS_T)

    def _vi(self) -> tuple[str, ...]:
        return self._rng.choice(VERBS_I)

    @staticmethod
    def _present(verb: tuple[str, ...], number: str) -> str:
        return verb[2] if number == "sg" else verb[0]

    @staticmethod
    def _was(number: str, negative: bool = False) -> str:
        word = "was" if number in ("sg", "i") else "were"
        return word + ("n't" if negative else "")

    @staticmethod
    def _is(number: str) -> str:
        return {"sg": "is", "pl": "are", "i": "am"}[number]

    # -- templates -----------------------------------------------------------

    def _t_past_transitive(self) -> Phrase:
        # yesterday margaret painted the small boat near the river
        subj, _ = self._subject()
        words = [*subj, self._vt()[1], *self._object()]
        if self._p(0.6):
            words += self._place()
        if self._p(0.5):
            return [*self._time_past(), *words]
        return words

    def _t_counted_objects(self) -> Phrase:
        # the old farmer carried seven heavy boxes across the bridge
        subj, _ = self._subject(pronouns=False)
        obj = [self._c(NUMBERS), *self._adj(ADJ_FOR_THING, 0.8), self._c(THINGS_PL)]
        return [*subj, self._vt()[1], *obj, *self._place()]

    def _t_did_question(self) -> Phrase:
        # did the quiet teacher find the letter
        subj, _ = self._subject()
        words = ["did", *subj, self._vt()[0], *self._object()]
        if self._p(0.4):
            words += self._place() if self._p(0.5) else self._time_past()
        return words

    def _t_animals_intransitive(self) -> Phrase:
        # four green birds sang softly in the garden this morning
        head = [self._c(NUMBERS), *self._adj(ADJ_FOR_ANIMAL, 0.8), self._c(ANIMALS_PL)]
        words = [*head, self._vi()[1]]
        if self._p(0.7):
            words.append(self._c(ADVERBS))
        words += self._place()
        if self._p(0.5):
            words += self._time_past()
        return words

    def _t_habit(self) -> Phrase:
        # the baker sells fresh pies every morning
        subj, number = self._subject()
        return [*subj, self._present(self._vt(), number), *self._object(), *self._time_habit()]

    def _t_future(self) -> Phrase:
        # tomorrow the captain will paint the old boat
        subj, _ = self._subject()
        time = self._time_future()
        words = [*subj, "will", self._vt()[0], *self._object()]
        if self._p(0.3):
            words += self._place()
        return [*time, *words] if self._p(0.4) else [*words, *time]

    def _t_progressive(self) -> Phrase:
        # the nurse was washing the blankets when the children laughed
        subj, number = self._subject()
        subj2, _ = self._subject()
        was = self._was(number, negative=self._p(0.15))
        return [*subj, was, self._vt()[3], *self._object(),
                self._c(("when", "while")), *subj2, self._vi()[1]]

    def _t_wh_question(self) -> Phrase:
        # where did the young pilot find the silver key
        subj, _ = self._subject()
        words = [self._c(WH_WORDS), "did", *subj, self._vt()[0], *self._object()]
        if self._p(0.3):
            words += self._time_past()
        return words

    def _t_negative(self) -> Phrase:
        # my sister did not open the letter yesterday
        subj, _ = self._subject()
        neg = ["did not"] if self._p(0.5) else ["didn't"]
        words = [*subj, *neg, self._vt()[0], *self._object()]
        if self._p(0.6):
            words += self._time_past()
        return words

    def _t_description(self) -> Phrase:
        # the old clock in the kitchen was very noisy
        r = self._rng.random()
        if r < 0.5:
            head, number, pool = ["the", *self._adj(ADJ_FOR_THING, 0.4), self._c(THINGS)], "sg", ADJ_FOR_THING
        elif r < 0.7:
            head, number, pool = ["the", *self._adj(ADJ_FOR_THING, 0.4), self._c(THINGS_PL)], "pl", ADJ_FOR_THING
        elif r < 0.85:
            head, number, pool = ["the", self._c(PEOPLE)], "sg", ADJ_FOR_LIVING
        else:
            head, number, pool = ["the", self._c(ANIMALS_PL)], "pl", ADJ_FOR_LIVING
        r = self._rng.random()
        if r < 0.5:
            verb = self._was(number)
        elif r < 0.6:
            verb = self._was(number, negative=True)
        else:
            verb = self._is(number)
        degree = self._c(("very", "too", "really")) if verb.endswith("n't") else self._c(INTENSIFIERS)
        words = [*head, *self._place(), verb, degree, self._c(pool)]
        if self._p(0.3):
            words += ["and", self._c(pool)]
        return words

    def _t_because(self) -> Phrase:
        # the girl laughed happily because her brother dropped the cake
        subj, _ = self._subject()
        subj2, _ = self._subject()
        words = [*subj, self._vi()[1]]
        if self._p(0.6):
            words.append(self._c(ADVERBS))
        return [*words, self._c(CONJUNCTIONS), *subj2, self._vt()[1], *self._object()]

    def _t_there_were(self) -> Phrase:
        # there were nine rusty nails under the old bench this morning
        if self._p(0.6):
            head = ["there were", *self._thing_pl(0.7)]
        else:
            head = ["there was a", *self._adj(ADJ_FOR_THING, 0.7), self._c(THINGS)]
        words = [*head, *self._place()]
        if self._p(0.4):
            words += self._time_past()
        return words

    def _t_modal(self) -> Phrase:
        # the children could carry the baskets across the river
        subj, _ = self._subject()
        words = [*subj, self._c(MODALS), self._vt()[0], *self._object()]
        if self._p(0.6):
            words += self._place()
        return words

    def _t_pair_of_names(self) -> Phrase:
        # alice and the old baker painted the fence last summer
        second = [self._c(NAMES)] if self._p(0.5) else ["the", *self._adj(ADJ_FOR_LIVING, 0.4), self._c(PEOPLE)]
        return [self._c(NAMES), "and", *second, self._vt()[1], *self._object(), *self._time_past()]

    def _t_imperative(self) -> Phrase:
        # please carry the heavy box into the kitchen
        words = [self._vt()[0], *self._object(), *self._place()]
        if self._p(0.3):
            words += self._time_future()
        return ["please", *words] if self._p(0.6) else words

    def _t_intent(self) -> Phrase:
        # the young king wanted to buy a golden ring
        subj, _ = self._subject()
        words = [*subj, self._c(INTENT_PAST), "to", self._vt()[0], *self._object()]
        if self._p(0.35):
            words += self._time_past()
        return words

    def _t_present_intransitive(self) -> Phrase:
        # the children play happily in the park every afternoon
        subj, number = self._subject()
        words = [*subj, self._present(self._vi(), number)]
        if self._p(0.6):
            words.append(self._c(ADVERBS))
        if self._p(0.7):
            words += self._place()
        return [*words, *self._time_habit()]

    def _t_be_ing_question(self) -> Phrase:
        # are the children playing near the river
        subj, number = self._subject()
        if self._p(0.5):
            be = self._is(number)
        else:
            be = self._was(number)
        return [be, *subj, self._vi()[3], *self._place()]

    def _t_ditransitive(self) -> Phrase:
        # grandmother gave the little boy a green apple
        subj, _ = self._subject()
        r = self._rng.random()
        if r < 0.4:
            recipient = self._person_sg()
        elif r < 0.6:
            recipient = ["the", *self._adj(ADJ_FOR_LIVING, 0.3), self._c(PEOPLE_PL)]
        else:
            recipient = [self._c(OBJECT_PRONOUNS)]
        obj = self._thing_sg() if self._p(0.6) else self._thing_pl()
        words = [*subj, self._c(DITRANSITIVE_PAST), *recipient, *obj]
        if self._p(0.35):
            words += self._time_past()
        return words

    def _t_reported(self) -> Phrase:
        # my uncle said that the pirates stole the golden crown
        subj, _ = self._subject()
        subj2, _ = self._subject()
        return [*subj, self._c(REPORT_PAST), "that", *subj2, self._vt()[1], *self._object()]

    def _t_date(self) -> Phrase:
        # on the third of may the farmers sold forty sheep
        subj, _ = self._subject()
        if self._p(0.5):
            rest = [self._vt()[1], *self._object()]
        else:
            rest = [self._vi()[1], *([self._c(ADVERBS)] if self._p(0.5) else []), *self._place()]
        return [*self._date(), *subj, *rest]


# --------------------------------------------------------------------------
# Vocabulary and splits
# --------------------------------------------------------------------------


def _all_words() -> tuple[str, ...]:
    groups: list[Iterable[str]] = [
        NAMES, PEOPLE, PEOPLE_PL, ANIMALS, ANIMALS_PL, THINGS, THINGS_PL, PLACES,
        ADJ_ANY, ADJ_LIVING, ADJ_THING, COLORS, NUMBERS, ORDINALS,
        " ".join(DAY_ORDINALS).split(), WEEKDAYS, MONTHS, SEASONS, PARTS_OF_DAY,
        MEALS, DITRANSITIVE_PAST, REPORT_PAST, INTENT_PAST, MODALS, CONJUNCTIONS,
        WH_WORDS, INTENSIFIERS, ADVERBS, PREPOSITIONS, DET_SG, DET_PL,
        [w for w, _ in SUBJECT_PRONOUNS], OBJECT_PRONOUNS, TIME_UNITS, _LITERALS,
    ]
    groups += [list(v) for v in VERBS_T]
    groups += [list(v) for v in VERBS_I]
    seen: dict[str, None] = {}
    for group in groups:
        for w in group:
            seen[w] = None
    return tuple(sorted(seen))


_VOCABULARY = _all_words()


def vocabulary() -> list[str]:
    """Return the sorted list (a new list each call) of every word the generator can emit."""
    return list(_VOCABULARY)


def sentence_words(sentences: Iterable[str]) -> set[str]:
    """Return the set of distinct space-separated words in ``sentences``."""
    words: set[str] = set()
    for s in sentences:
        words.update(s.split())
    return words


#: Where held-out (out-of-vocabulary) words come from: open-class words, whose absence from
#: the other splits leaves every template usable. A noun is held out with its plural.
OOV_SOURCES = (NAMES, PEOPLE, ANIMALS, THINGS, PLACES, ADJ_ANY, ADJ_LIVING, ADJ_THING)
_OOV_SAMPLE = 4000  # sentences whose word counts estimate each word's share of the tokens


def held_out_words(fraction: float, seed: int) -> frozenset[str]:
    """Words to keep out of every split but the out-of-vocabulary ones: a seeded choice of
    open-class words (:data:`OOV_SOURCES`) whose share of the tokens of freely generated
    sentences, estimated on a sample, first reaches ``fraction`` (0: none)."""
    if fraction <= 0:
        return frozenset()
    gen = SentenceGenerator(seed + 7919)  # its own stream: the splits' sentences are drawn elsewhere
    counts: dict[str, int] = {}
    for _ in range(_OOV_SAMPLE):
        for w in gen.sentence().split():
            counts[w] = counts.get(w, 0) + 1
    total = sum(counts.values())
    nouns = set(PEOPLE) | set(ANIMALS) | set(THINGS)
    units = sorted({w for group in OOV_SOURCES for w in group})
    random.Random(seed + 104729).shuffle(units)
    held: set[str] = set()
    share = 0
    for w in units:
        if share >= fraction * total:
            break
        forms = {w, _plural(w)} if w in nouns else {w}
        held |= forms
        share += sum(counts.get(f, 0) for f in forms)
    return frozenset(held)


def generate_splits(sizes: dict[str, int], seed: int, held_out: frozenset[str] = frozenset(),
                    oov_splits: Iterable[str] = (), generator: Callable[[int], Any] | None = None
                    ) -> dict[str, list[str]]:
    """Generate disjoint lists of unique sentences.

    ``sizes`` maps split names to counts, e.g. ``{"train": 2000, "dev": 200,
    "test": 200, "lm": 20000}``.  Returns a dict with the same keys in the same
    order; each value is a list of exactly that many sentences, in generation
    order, no sentence repeated within or across lists.  The splits are filled
    in key order from one ``SentenceGenerator(seed)`` stream, so the result is
    fully determined by ``(sizes, seed)``. ``generator(seed)`` makes the sentence stream
    (this module's :class:`SentenceGenerator` by default; the Mandarin one shares the rest). A
    sentence with a ``held_out`` word goes only
    to the ``oov_splits`` (whose sentences are drawn freely, so held-out words occur there at
    their natural rate); the other splits never contain one.

    Raises ValueError for a negative or non-integer size, or when fewer unique
    sentences than requested were produced within ``50 * total + 1000``
    attempts.
    """
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"size for split {name!r} must be a non-negative int, got {n!r}")
    total = sum(sizes.values())
    max_attempts = 50 * total + 1000
    oov_splits = set(oov_splits)
    gen = (generator or SentenceGenerator)(seed)
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    attempts = 0
    produced = 0
    for name, n in sizes.items():
        bucket: list[str] = []
        while len(bucket) < n:
            if attempts >= max_attempts:
                raise ValueError(
                    f"asked for {total} unique sentences {dict(sizes)} with seed {seed}, "
                    f"but produced only {produced + len(bucket)} after {attempts} attempts"
                )
            attempts += 1
            s = gen.sentence()
            if s in seen or (held_out and name not in oov_splits and not held_out.isdisjoint(s.split())):
                continue
            seen.add(s)
            bucket.append(s)
        produced += n
        out[name] = bucket
    return out
