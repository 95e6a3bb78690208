"""A small random English grammar that produces transcripts for synthetic speech.

Sentences are lower-case words separated by single spaces (letters and
apostrophes only), 4 to 12 words long, and grammatical enough that eSpeak reads
them with natural prosody.  They are not meant to make sense: "the purple
donkey sold my umbrella" is fine, and keeps a language model from guessing
words instead of listening.  Only ordinary dictionary words are used, so eSpeak
pronounces every word as written (no digits, abbreviations or acronyms).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from num2words import num2words

MIN_WORDS = 4
MAX_WORDS = 12

NAMES = """
    james mary robert linda michael sarah david emma thomas anna peter lucy
    daniel grace henry alice oliver sophie jack emily samuel laura george helen
    william rachel edward julia charles hannah frank olivia martin chloe paul
    claire simon ruth arthur nora
""".split()

PEOPLE = """
    teacher doctor farmer baker nurse driver pilot singer painter writer student
    child boy girl man woman neighbour brother sister mother father uncle aunt
    cousin friend king queen soldier sailor lawyer judge waiter chef dancer
    player visitor stranger captain engineer gardener fisherman librarian
    officer person
""".split()

ANIMALS = """
    dog cat horse cow sheep goat pig chicken duck rabbit mouse fox wolf bear lion
    tiger monkey donkey elephant frog snake owl eagle parrot whale fish goose
    spider turtle camel
""".split()

THINGS = """
    book letter key box chair table window door lamp clock phone bottle cup
    glass plate knife spoon basket bag wallet ticket map picture camera radio
    guitar piano drum ball kite bicycle car truck boat train ladder hammer rope
    umbrella hat coat shirt shoe blanket pillow candle mirror bucket newspaper
    envelope pencil notebook shelf engine wheel fence
""".split()

FOODS = """
    apple orange banana lemon cherry potato tomato carrot onion cake biscuit
    sandwich pie egg cookie melon pear peach
""".split()

PLACES = """
    kitchen garden market station library school hospital office village city
    park river lake forest beach mountain bridge museum church castle harbour
    farm factory bakery shop hotel restaurant cinema theatre airport island
    valley desert hill field road street corner cellar attic barn stadium
    playground
""".split()

ADJECTIVES = """
    big small large tiny old young new ancient heavy light long short tall
    wide narrow red blue green yellow black white brown purple orange grey pink
    golden silver wooden broken clean dirty empty full bright dark quiet loud
    happy sad angry tired hungry thirsty busy lazy clever brave careful
    curious gentle friendly lucky nervous polite proud shy strange
    famous beautiful ugly lovely pretty fresh warm cold hot wet dry soft hard
    smooth rough sharp sweet bitter cheap expensive rich poor simple difficult
    easy early late dangerous safe wild calm
""".split()

DEGREE_ADVERBS = "very quite really rather extremely too".split()

MANNER_ADVERBS = """
    quickly slowly quietly loudly carefully happily sadly gently suddenly
    easily badly politely proudly nervously calmly angrily bravely softly
    eagerly patiently secretly honestly warmly kindly
""".split()

FREQUENCY_ADVERBS = "always often sometimes never usually rarely".split()

TIMES = [
    "yesterday", "today", "tomorrow", "tonight", "last night", "last week",
    "next week", "last year", "next month", "this morning", "this evening",
    "every day", "every night", "at noon", "at midnight", "in the morning",
    "in the afternoon", "in the evening", "after lunch", "before dinner",
    "after school", "before breakfast", "a moment ago", "this weekend",
    *(f"on {day}" for day in "monday tuesday wednesday thursday friday saturday sunday".split()),
    *(f"in {month}" for month in """january february march april may june july
        august september october november december""".split()),
]  # fmt: skip

PREPOSITIONS = """
    in on under near behind beside across through above below inside outside
    around along past toward beyond
""".split()


def _verb_table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


# base, third person singular, past, past participle, present participle
TRANSITIVE_VERBS = _verb_table("""
    see sees saw seen seeing
    find finds found found finding
    buy buys bought bought buying
    sell sells sold sold selling
    bring brings brought brought bringing
    take takes took taken taking
    give gives gave given giving
    carry carries carried carried carrying
    hold holds held held holding
    open opens opened opened opening
    close closes closed closed closing
    break breaks broke broken breaking
    fix fixes fixed fixed fixing
    clean cleans cleaned cleaned cleaning
    wash washes washed washed washing
    paint paints painted painted painting
    draw draws drew drawn drawing
    build builds built built building
    make makes made made making
    cook cooks cooked cooked cooking
    eat eats ate eaten eating
    drop drops dropped dropped dropping
    catch catches caught caught catching
    throw throws threw thrown throwing
    kick kicks kicked kicked kicking
    push pushes pushed pushed pushing
    pull pulls pulled pulled pulling
    lift lifts lifted lifted lifting
    move moves moved moved moving
    hide hides hid hidden hiding
    lose loses lost lost losing
    keep keeps kept kept keeping
    leave leaves left left leaving
    want wants wanted wanted wanting
    need needs needed needed needing
    like likes liked liked liking
    love loves loved loved loving
    hate hates hated hated hating
    watch watches watched watched watching
    follow follows followed followed following
    visit visits visited visited visiting
    meet meets met met meeting
    call calls called called calling
    help helps helped helped helping
    remember remembers remembered remembered remembering
    forget forgets forgot forgotten forgetting
    borrow borrows borrowed borrowed borrowing
    steal steals stole stolen stealing
    send sends sent sent sending
    choose chooses chose chosen choosing
    check checks checked checked checking
    fill fills filled filled filling
    count counts counted counted counting
    feed feeds fed fed feeding
    chase chases chased chased chasing
    pick picks picked picked picking
    touch touches touched touched touching
    show shows showed shown showing
    wrap wraps wrapped wrapped wrapping
    deliver delivers delivered delivered delivering
    order orders ordered ordered ordering
    describe describes described described describing
    notice notices noticed noticed noticing
    admire admires admired admired admiring
    protect protects protected protected protecting
    repair repairs repaired repaired repairing
    collect collects collected collected collecting
""")

INTRANSITIVE_VERBS = _verb_table("""
    sleep sleeps slept slept sleeping
    run runs ran run running
    walk walks walked walked walking
    swim swims swam swum swimming
    sing sings sang sung singing
    dance dances danced danced dancing
    laugh laughs laughed laughed laughing
    cry cries cried cried crying
    smile smiles smiled smiled smiling
    wait waits waited waited waiting
    work works worked worked working
    play plays played played playing
    sit sits sat sat sitting
    stand stands stood stood standing
    jump jumps jumped jumped jumping
    fall falls fell fallen falling
    arrive arrives arrived arrived arriving
    travel travels travelled travelled travelling
    live lives lived lived living
    rest rests rested rested resting
    shout shouts shouted shouted shouting
    whisper whispers whispered whispered whispering
    listen listens listened listened listening
    hurry hurries hurried hurried hurrying
    climb climbs climbed climbed climbing
    disappear disappears disappeared disappeared disappearing
    shiver shivers shivered shivered shivering
    complain complains complained complained complaining
    return returns returned returned returning
    wander wanders wandered wandered wandering
""")

IRREGULAR_PLURALS = {
    "child": "children", "man": "men", "woman": "women", "person": "people",
    "fisherman": "fishermen", "mouse": "mice", "sheep": "sheep", "fish": "fish",
    "goose": "geese", "wolf": "wolves", "knife": "knives", "shelf": "shelves",
    "potato": "potatoes", "tomato": "tomatoes",
}  # fmt: skip

MODALS = "can could should might must would will".split()

# Subject and object pronouns with (person, plural) for verb agreement.
SUBJECT_PRONOUNS = {"i": (1, False), "you": (2, False), "he": (3, False), "she": (3, False),
                    "we": (1, True), "they": (3, True)}  # fmt: skip
OBJECT_PRONOUNS = "me you him her us them it".split()

# Words that only appear in sentence frames, listed so vocabulary() is complete.
FRAME_WORDS = """
    a an the this that these those my your his her our their some every many
    and but because while so who which what where when why how please there
    is are was were am not has have do does did don't doesn't didn't won't
    can't isn't aren't wasn't weren't hasn't haven't
""".split()


def plural(noun: str) -> str:
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def number_words(n: int) -> list[str]:
    return num2words(n).replace("-", " ").split()


@dataclass(frozen=True)
class Subject:
    words: list[str]
    person: int
    is_plural: bool

    @property
    def is_third_singular(self) -> bool:
        return self.person == 3 and not self.is_plural


def article(next_word: str) -> str:
    # The word lists avoid "u" words said with a "you" sound and silent "h" words.
    return "an" if next_word[0] in "aeiou" else "a"


def noun_phrase(rng: random.Random, nouns: list[str], allow_plural: bool = True) -> tuple[list[str], bool]:
    """Determiner, optional adjective(s) and a noun; returns (words, is_plural)."""
    noun = rng.choice(nouns)
    adjectives = [rng.choice(ADJECTIVES) for _ in range(rng.choice((0, 0, 1, 1, 1, 2)))]
    if allow_plural and rng.random() < 0.35:
        head = adjectives + [plural(noun)]
        if rng.random() < 0.25:
            return number_words(rng.randint(2, 99)) + head, True
        determiner = rng.choice(["the", "these", "those", "my", "your", "our", "their", "some", "many"])
        return [determiner, *head], True
    head = adjectives + [noun]
    determiner = rng.choice(
        ["the", "the", "a", "this", "that", "my", "your", "his", "her", "our", "their", "every"]
    )
    return [article(head[0]) if determiner == "a" else determiner, *head], False


def subject(rng: random.Random) -> Subject:
    roll = rng.random()
    if roll < 0.2:
        return Subject([rng.choice(NAMES)], 3, False)
    if roll < 0.4:
        pronoun = rng.choice(list(SUBJECT_PRONOUNS))
        return Subject([pronoun], *SUBJECT_PRONOUNS[pronoun])
    words, is_plural = noun_phrase(rng, PEOPLE if roll < 0.75 else ANIMALS)
    return Subject(words, 3, is_plural)


def object_phrase(rng: random.Random) -> list[str]:
    roll = rng.random()
    if roll < 0.1:
        return [rng.choice(OBJECT_PRONOUNS)]
    if roll < 0.2:
        return [rng.choice(NAMES)]
    nouns = THINGS if roll < 0.6 else FOODS if roll < 0.75 else ANIMALS if roll < 0.88 else PEOPLE
    return noun_phrase(rng, nouns)[0]


def place_phrase(rng: random.Random) -> list[str]:
    return [rng.choice(PREPOSITIONS), *noun_phrase(rng, PLACES, allow_plural=False)[0]]


def be(subj: Subject, past: bool, negative: bool = False) -> str:
    if past:
        word = "were" if subj.is_plural or subj.person == 2 else "was"
    else:
        word = "am" if subj.person == 1 and not subj.is_plural else "is" if subj.is_third_singular else "are"
    if not negative:
        return word
    return {"am": "am not", "is": "isn't", "are": "aren't", "was": "wasn't", "were": "weren't"}[word]


def verb_group(rng: random.Random, subj: Subject, verb: list[str]) -> list[str]:
    """The verb in a random tense, aspect, mood and polarity, agreeing with the subject."""
    base, third, past, participle, ing = verb
    negative = rng.random() < 0.2
    form = rng.choice(
        ["present", "past", "past", "future", "progressive", "past_progressive", "perfect", "modal"]
    )
    if form == "present":
        if negative:
            return ["doesn't" if subj.is_third_singular else "don't", base]
        if rng.random() < 0.3:
            return [rng.choice(FREQUENCY_ADVERBS), third if subj.is_third_singular else base]
        return [third if subj.is_third_singular else base]
    if form == "past":
        return ["didn't", base] if negative else [past]
    if form == "future":
        return ["won't", base] if negative else ["will", base]
    if form in ("progressive", "past_progressive"):
        return [*be(subj, form == "past_progressive", negative).split(), ing]
    if form == "perfect":
        have = "has" if subj.is_third_singular else "have"
        return [have + "n't" if negative else have, participle]
    modal = rng.choice(MODALS)
    return ["can't", base] if negative and modal == "can" else [modal, base]


def optional_tail(rng: random.Random) -> list[str]:
    """Adverbials that end many sentences: manner, place and time, each optional."""
    tail: list[str] = []
    if rng.random() < 0.25:
        tail.append(rng.choice(MANNER_ADVERBS))
    if rng.random() < 0.35:
        tail += place_phrase(rng)
    if rng.random() < 0.35:
        tail += rng.choice(TIMES).split()
    return tail


def declarative_transitive(rng: random.Random) -> list[str]:
    subj = subject(rng)
    return [
        *subj.words,
        *verb_group(rng, subj, rng.choice(TRANSITIVE_VERBS)),
        *object_phrase(rng),
        *optional_tail(rng),
    ]


def declarative_intransitive(rng: random.Random) -> list[str]:
    subj = subject(rng)
    return [*subj.words, *verb_group(rng, subj, rng.choice(INTRANSITIVE_VERBS)), *optional_tail(rng)]


def copula(rng: random.Random) -> list[str]:
    subj = subject(rng)
    degree = [rng.choice(DEGREE_ADVERBS)] if rng.random() < 0.4 else []
    time = rng.choice(TIMES).split() if rng.random() < 0.3 else []
    return [
        *subj.words,
        *be(subj, rng.random() < 0.5, rng.random() < 0.2).split(),
        *degree,
        rng.choice(ADJECTIVES),
        *time,
    ]


def yes_no_question(rng: random.Random) -> list[str]:
    subj = subject(rng)
    base, _, _, participle, ing = rng.choice(TRANSITIVE_VERBS)
    form = rng.choice(["do", "did", "modal", "progressive", "perfect"])
    if form == "do":
        return ["does" if subj.is_third_singular else "do", *subj.words, base, *object_phrase(rng)]
    if form == "did":
        return ["did", *subj.words, base, *object_phrase(rng), *optional_tail(rng)]
    if form == "modal":
        return [rng.choice(MODALS), *subj.words, base, *object_phrase(rng), *optional_tail(rng)]
    if form == "progressive":
        return [be(subj, rng.random() < 0.5), *subj.words, ing, *object_phrase(rng)]
    return ["has" if subj.is_third_singular else "have", *subj.words, participle, *object_phrase(rng)]


def wh_question(rng: random.Random) -> list[str]:
    subj = subject(rng)
    auxiliary = rng.choice(["did", "will", "can", "should", "does" if subj.is_third_singular else "do"])
    roll = rng.random()
    if roll < 0.25:  # the subject is questioned: no auxiliary, past tense
        return ["who", rng.choice(TRANSITIVE_VERBS)[2], *object_phrase(rng), *optional_tail(rng)]
    if roll < 0.5:
        return ["what", auxiliary, *subj.words, rng.choice(TRANSITIVE_VERBS)[0], *optional_tail(rng)]
    if roll < 0.7:
        nouns = rng.choice([THINGS, FOODS, ANIMALS])
        if rng.random() < 0.5:
            head = ["which", rng.choice(nouns)]
        else:
            head = ["how", "many", plural(rng.choice(nouns))]
        return [*head, auxiliary, *subj.words, rng.choice(TRANSITIVE_VERBS)[0]]
    wh = rng.choice(["where", "when", "why", "how"])
    return [wh, auxiliary, *subj.words, rng.choice(INTRANSITIVE_VERBS)[0], *optional_tail(rng)]


def relative_clause(rng: random.Random) -> list[str]:
    """A subject modified by a relative clause: "the man who lives here owns a boat"."""
    is_person = rng.random() < 0.6
    words, is_plural = noun_phrase(rng, PEOPLE if is_person else ANIMALS)
    head = Subject(words, 3, is_plural)
    pronoun = "who" if is_person else rng.choice(["that", "which"])
    if rng.random() < 0.5:
        inner = [*verb_group(rng, head, rng.choice(INTRANSITIVE_VERBS)), *place_phrase(rng)]
    else:
        inner = [*verb_group(rng, head, rng.choice(TRANSITIVE_VERBS)), *object_phrase(rng)]
    return [
        *head.words,
        pronoun,
        *inner,
        *verb_group(rng, head, rng.choice(TRANSITIVE_VERBS)),
        *object_phrase(rng),
    ]


def object_relative_clause(rng: random.Random) -> list[str]:
    """An object modified by a relative clause: "she lost the key that her father made"."""
    subj = subject(rng)
    inner_subject = subject(rng)
    inner = [*inner_subject.words, *verb_group(rng, inner_subject, rng.choice(TRANSITIVE_VERBS))]
    obj = noun_phrase(rng, THINGS)[0]
    main_verb = verb_group(rng, subj, rng.choice(TRANSITIVE_VERBS))
    return [*subj.words, *main_verb, *obj, rng.choice(["that", "which"]), *inner]


def existential(rng: random.Random) -> list[str]:
    past = rng.random() < 0.5
    if rng.random() < 0.5:
        noun = rng.choice(rng.choice([THINGS, ANIMALS, FOODS]))
        adjective = [rng.choice(ADJECTIVES)] if rng.random() < 0.5 else []
        head = [*adjective, noun]
        return ["there", "was" if past else "is", article(head[0]), *head, *place_phrase(rng)]
    count = number_words(rng.randint(2, 30)) if rng.random() < 0.7 else ["many"]
    noun = plural(rng.choice(rng.choice([THINGS, ANIMALS, FOODS, PEOPLE])))
    return ["there", "were" if past else "are", *count, noun, *place_phrase(rng)]


def imperative(rng: random.Random) -> list[str]:
    base = rng.choice(TRANSITIVE_VERBS)[0]
    opener = rng.choice([[], ["please"], ["don't"]])
    return [*opener, base, *noun_phrase(rng, THINGS + FOODS)[0], *optional_tail(rng)]


def coordination(rng: random.Random) -> list[str]:
    first = declarative_intransitive(rng) if rng.random() < 0.5 else declarative_transitive(rng)
    second = declarative_intransitive(rng)
    return [*first, rng.choice(["and", "but", "because", "while", "so"]), *second]


SENTENCE_FORMS: list[Callable[[random.Random], list[str]]] = [
    declarative_transitive, declarative_transitive, declarative_transitive,
    declarative_intransitive, declarative_intransitive, copula, yes_no_question,
    wh_question, wh_question, relative_clause, object_relative_clause,
    existential, imperative, coordination,
]  # fmt: skip


def make_sentence(rng: random.Random) -> str:
    while True:
        words = rng.choice(SENTENCE_FORMS)(rng)
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            return " ".join(words)


def make_sentences(n: int, rng: random.Random) -> list[str]:
    """``n`` random sentences; the same ``rng`` state gives the same sentences."""
    return [make_sentence(rng) for _ in range(n)]


def vocabulary() -> set[str]:
    """Every word the grammar can emit."""
    countable = PEOPLE + ANIMALS + THINGS + FOODS
    words = {
        *NAMES, *countable, *map(plural, countable), *PLACES, *ADJECTIVES, *DEGREE_ADVERBS,
        *MANNER_ADVERBS, *FREQUENCY_ADVERBS, *PREPOSITIONS, *MODALS,
        *SUBJECT_PRONOUNS, *OBJECT_PRONOUNS, *FRAME_WORDS,
        *(word for time in TIMES for word in time.split()),
        *(word for n in range(2, 100) for word in number_words(n)),
        *(form for verb in TRANSITIVE_VERBS + INTRANSITIVE_VERBS for form in verb),
    }  # fmt: skip
    return words
