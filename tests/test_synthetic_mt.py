"""The synthetic English->German grammar: hand-checked agreement cases, vocabulary, determinism."""

from __future__ import annotations

import random
import re

import pytest

from qbench.config import SyntheticMTData
from qbench.data.synthetic_mt import (
    ADJECTIVES,
    BARE,
    BE,
    CONJUNCTIONS,
    DATIVE,
    DEGREES,
    DITRANSITIVE,
    EVERY,
    INTRANSITIVE,
    MOTION,
    NOUNS,
    POSSESSIVES,
    PREPOSITIONS,
    PRONOUNS,
    REPORTING,
    THE,
    THIS,
    TIMES,
    TRANSITIVE,
    A,
    AdjectivePredicate,
    Age,
    Clause,
    Name,
    NounPhrase,
    PrepositionalPhrase,
    conjugate_present,
    english_vocabulary,
    fronted_subordinate,
    load_synthetic_mt,
    make_pairs,
    number,
    question,
    reported,
    statement,
    subordinate,
)


def np(determiner, noun: str, *adjectives: str, plural: bool = False) -> NounPhrase:
    return NounPhrase(determiner, NOUNS[noun], tuple(ADJECTIVES[a] for a in adjectives), plural)


def pp(preposition: str, obj) -> PrepositionalPhrase:
    return PrepositionalPhrase(PREPOSITIONS[preposition], obj)


VERB = {**TRANSITIVE, **DATIVE, **DITRANSITIVE, **INTRANSITIVE, **MOTION}

# Each case is built from fixed choices; the German was checked by hand.
CASES = [
    # weak endings after the definite article; nominative and accusative feminine
    (
        statement(Clause(np(THE, "dog", "small"), VERB["see"], objects=(np(THE, "cat", "big"),))),
        "The small dog sees the big cat.",
        "Der kleine Hund sieht die große Katze.",
    ),
    # mixed endings after ein: -er/-es in the nominative, accusative masculine einen ... -en
    (
        statement(Clause(np(A, "horse", "old"), VERB["see"], objects=(np(A, "dog", "small"),))),
        "An old horse sees a small dog.",
        "Ein altes Pferd sieht einen kleinen Hund.",
    ),
    # weak masculine noun: den Jungen; stem change of the third person (läuft)
    (
        statement(Clause(np(THE, "lion"), VERB["chase"], objects=(np(THE, "boy"),))),
        "The lion chases the boy.",
        "Der Löwe jagt den Jungen.",
    ),
    # dative after "mit", with a contraction-free feminine and an ein-word
    (
        statement(Clause(np(THE, "boy"), VERB["play"], complement=pp("with", np(A, "cat", "small")))),
        "The boy plays with a small cat.",
        "Der Junge spielt mit einer kleinen Katze.",
    ),
    # dative plural adds -n to the noun; possessive ein-word plural takes weak -en on adjectives
    (
        statement(
            Clause(
                PRONOUNS["I"],
                VERB["dance"],
                complement=pp("with", np(POSSESSIVES["our"], "child", "happy", plural=True)),
            )
        ),
        "I dance with our happy children.",
        "Ich tanze mit unseren glücklichen Kindern.",
    ),
    # strong endings after a number; verb agrees with the plural subject
    (
        statement(Clause(np(number(3), "dog", "small", plural=True), VERB["see"], objects=(np(THE, "cat"),))),
        "Three small dogs see the cat.",
        "Drei kleine Hunde sehen die Katze.",
    ),
    (
        statement(
            Clause(
                PRONOUNS["she"],
                VERB["sleep"],
                complement=pp("next to", np(number(21), "dog", "black", plural=True)),
            )
        ),
        "She sleeps next to twenty-one black dogs.",
        "Sie schläft neben einundzwanzig schwarzen Hunden.",
    ),
    # dative verb and ditransitive: dative before accusative
    (
        statement(Clause(np(THE, "girl"), VERB["help"], objects=(np(THE, "man", "old"),))),
        "The girl helps the old man.",
        "Das Mädchen hilft dem alten Mann.",
    ),
    (
        statement(Clause(np(THE, "man"), VERB["give"], objects=(np(THE, "child"), np(A, "apple")))),
        "The man gives the child an apple.",
        "Der Mann gibt dem Kind einen Apfel.",
    ),
    # perfect with haben/sein, participle at the end; contractions im/ins/zum/zur
    (
        statement(Clause(np(THE, "cat"), VERB["sleep"], "past", complement=pp("in", np(THE, "house")))),
        "The cat slept in the house.",
        "Die Katze hat im Haus geschlafen.",
    ),
    (
        statement(
            Clause(np(THE, "dog"), VERB["run"], "past", complement=pp("into", np(THE, "house"))),
            front_time=False,
        ),
        "The dog ran into the house.",
        "Der Hund ist ins Haus gelaufen.",
    ),
    (
        statement(Clause(PRONOUNS["we"], VERB["go"], "future", complement=pp("to", np(THE, "teacher")))),
        "We will go to the teacher.",
        "Wir werden zum Lehrer gehen.",
    ),
    (
        statement(Clause(PRONOUNS["you"], VERB["run"], complement=pp("to", np(THE, "queen")))),
        "You run to the queen.",
        "Du läufst zur Königin.",
    ),
    # verb second after a fronted time: the finite verb comes before the subject
    (
        statement(
            Clause(
                np(THE, "dog"),
                VERB["run"],
                "past",
                complement=pp("into", np(THE, "garden")),
                time=TIMES["yesterday"],
            ),
            front_time=True,
        ),
        "Yesterday the dog ran into the garden.",
        "Gestern ist der Hund in den Garten gelaufen.",
    ),
    # modals and the future: infinitive at the end
    (
        statement(Clause(PRONOUNS["you"], VERB["see"], "can", objects=(np(POSSESSIVES["my"], "house"),))),
        "You can see my house.",
        "Du kannst mein Haus sehen.",
    ),
    (
        statement(
            Clause(np(THE, "dog"), VERB["see"], "future", objects=(np(THE, "cat"),), time=TIMES["tomorrow"])
        ),
        "The dog will see the cat tomorrow.",
        "Der Hund wird die Katze morgen sehen.",
    ),
    (
        statement(Clause(Name("Anna"), VERB["read"], "want", objects=(np(THIS, "book"),))),
        "Anna wants to read this book.",
        "Anna will dieses Buch lesen.",
    ),
    # negation: nicht after a definite object, kein for an indefinite one
    (
        statement(Clause(np(THE, "dog"), VERB["see"], "past", objects=(np(THE, "cat"),), negative=True)),
        "The dog did not see the cat.",
        "Der Hund hat die Katze nicht gesehen.",
    ),
    (
        statement(Clause(np(THE, "dog"), VERB["see"], objects=(np(A, "cat"),), negative=True)),
        "The dog does not see a cat.",
        "Der Hund sieht keine Katze.",
    ),
    (
        statement(
            Clause(
                PRONOUNS["he"], VERB["buy"], objects=(np(BARE, "apple", "red", plural=True),), negative=True
            )
        ),
        "He does not buy red apples.",
        "Er kauft keine roten Äpfel.",
    ),
    # the time goes before new (indefinite) information
    (
        statement(
            Clause(np(THE, "woman"), VERB["find"], "past", objects=(np(A, "key"),), time=TIMES["yesterday"])
        ),
        "The woman found a key yesterday.",
        "Die Frau hat gestern einen Schlüssel gefunden.",
    ),
    # "be": predicate adjective without an ending, age with a number, simple past war
    (
        statement(
            Clause(
                np(EVERY, "house", "old"),
                BE,
                complement=AdjectivePredicate(ADJECTIVES["dark"], DEGREES["very"]),
            )
        ),
        "Every old house is very dark.",
        "Jedes alte Haus ist sehr dunkel.",
    ),
    (
        statement(Clause(np(THE, "man"), BE, "past", complement=Age(42))),
        "The man was forty-two years old.",
        "Der Mann war zweiundvierzig Jahre alt.",
    ),
    (
        statement(Clause(np(A, "lamp", "dark"), BE, complement=pp("on", np(THE, "table")))),
        "A dark lamp is on the table.",
        "Eine dunkle Lampe ist auf dem Tisch.",
    ),
    # questions: the finite verb first
    (
        question(Clause(np(THE, "dog"), VERB["see"], objects=(np(THE, "cat"),))),
        "Does the dog see the cat?",
        "Sieht der Hund die Katze?",
    ),
    (question(Clause(PRONOUNS["they"], VERB["swim"], "past")), "Did they swim?", "Sind sie geschwommen?"),
    # subordinate clauses: verb last, comma in German
    (
        reported(
            Clause(PRONOUNS["I"], REPORTING["know"]),
            Clause(np(THE, "dog"), VERB["see"], "past", objects=(np(THE, "cat"),)),
        ),
        "I know that the dog saw the cat.",
        "Ich weiß, dass der Hund die Katze gesehen hat.",
    ),
    (
        reported(
            Clause(np(THE, "teacher"), REPORTING["say"], "past"),
            Clause(PRONOUNS["she"], VERB["help"], "can", objects=(PRONOUNS["I"],)),
        ),
        "The teacher said that she can help me.",
        "Der Lehrer hat gesagt, dass sie mir helfen kann.",
    ),
    (
        subordinate(
            Clause(np(THE, "dog"), VERB["sleep"]),
            CONJUNCTIONS["because"],
            Clause(np(THE, "cat"), VERB["sing"]),
        ),
        "The dog sleeps because the cat sings.",
        "Der Hund schläft, weil die Katze singt.",
    ),
    (
        subordinate(
            Clause(np(THE, "dog"), VERB["sleep"]),
            CONJUNCTIONS["although"],
            Clause(np(THE, "cat"), VERB["sing"]),
        ),
        "The dog sleeps, although the cat sings.",
        "Der Hund schläft, obwohl die Katze singt.",
    ),
    # a fronted subordinate clause takes the first position: verb before subject in the main clause
    (
        fronted_subordinate(
            CONJUNCTIONS["if"],
            Clause(np(THE, "cat"), VERB["sing"]),
            Clause(np(THE, "dog"), VERB["sleep"], "future"),
        ),
        "If the cat sings, the dog will sleep.",
        "Wenn die Katze singt, wird der Hund schlafen.",
    ),
]


@pytest.mark.parametrize(("pair", "english", "german"), CASES, ids=[c[1] for c in CASES])
def test_hand_checked_sentence(pair: tuple[str, str], english: str, german: str) -> None:
    assert pair == (english, german)


def test_conjugation_patterns() -> None:
    assert conjugate_present("arbeiten") == ("arbeite", "arbeitest", "arbeitet", "arbeiten", "arbeiten")
    assert conjugate_present("zeichnen")[1:3] == ("zeichnest", "zeichnet")
    assert conjugate_present("wohnen")[1:3] == ("wohnst", "wohnt")
    assert conjugate_present("tanzen")[1:3] == ("tanzt", "tanzt")
    assert conjugate_present("lächeln")[:3] == ("lächle", "lächelst", "lächelt")
    assert conjugate_present("wandern")[:3] == ("wandere", "wanderst", "wandert")
    assert conjugate_present("sehen", "sieht", "siehst")[:3] == ("sehe", "siehst", "sieht")
    assert conjugate_present("wissen")[:3] == ("weiß", "weißt", "weiß")


def test_clause_rejects_wrong_valency_and_unnatural_negation() -> None:
    with pytest.raises(ValueError, match="takes 1 object"):
        Clause(np(THE, "dog"), VERB["see"])
    with pytest.raises(ValueError, match="no natural negation"):
        Clause(np(THE, "dog"), VERB["see"], objects=(np(EVERY, "cat"),), negative=True)


def test_vocabulary_is_large_and_covers_generated_english() -> None:
    vocabulary = english_vocabulary()
    assert len(vocabulary) >= 800
    pairs = make_pairs(2000, random.Random(1))
    used = {w for en, _ in pairs for w in re.split(r"[\s,.?-]+", en.lower()) if w}
    assert used <= vocabulary
    assert len(used) > 700  # the generator reaches most of the lexicon in a few thousand sentences


def test_sentences_are_capitalised_and_punctuated() -> None:
    german_nouns = {n.de for n in NOUNS.values()} | {n.de_plural for n in NOUNS.values()}
    # lower-case words that look like nouns: attributive adjectives (junge, der Junge)
    adjective_forms = {
        a.de_stem + ending for a in ADJECTIVES.values() for ending in ("e", "en", "er", "es", "em")
    }
    for en, de in make_pairs(500, random.Random(2)):
        for text in (en, de):
            assert text[0].isupper() and text[-1] in ".?" and "  " not in text
        lower_case = {w for w in re.findall(r"\w+", de) if w[0].islower()} - adjective_forms
        assert not {w.capitalize() for w in lower_case} & german_nouns, de


def test_generation_is_deterministic() -> None:
    assert make_pairs(50, random.Random(7)) == make_pairs(50, random.Random(7))
    assert make_pairs(50, random.Random(7)) != make_pairs(50, random.Random(8))
    cfg = SyntheticMTData(seed=3, train_sentences=300, valid_sentences=20, test_sentences=40)
    assert load_synthetic_mt(cfg) == load_synthetic_mt(cfg)


def test_splits_have_requested_sizes_and_test_is_unseen() -> None:
    cfg = SyntheticMTData(seed=0, train_sentences=2000, valid_sentences=50, test_sentences=100)
    data = load_synthetic_mt(cfg)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [2000, 50, 100]
    train = {en for en, _ in data["train"]}
    test = [en for en, _ in data["test"]]
    assert len(set(test)) == len(test) and not train & set(test)
    assert not train & {en for en, _ in data["valid"]}
