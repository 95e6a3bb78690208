"""Synthetic English->German translation pairs from a small grammar.

Each pair is one structure (a `Clause` of phrases) rendered twice, so the German is the exact
translation of the English and a model has to learn real German grammar to score well:

- nouns with gender and plural, weak masculines (der Junge, den Jungen) and the dative plural -n;
- determiners (der, ein, kein, dieser, jeder, mein, einige, viele, numbers) in the nominative,
  accusative and dative, with strong, weak or mixed adjective endings as the determiner demands;
- verbs agreeing in person and number, stem changes (sieht, läuft), the verb bracket of the
  perfect (hat ... gesehen, ist ... gelaufen), the future and modals (wird/kann ... sehen);
- verb-second order after a fronted time or clause, verb-first questions, verb-final
  subordinate clauses (dass, weil, wenn, obwohl, ...), nicht/kein negation, im/ins/zum/zur.

The English simple past is rendered as the spoken German perfect (sah -> hat gesehen), except
for sein, whose simple past (war) is what German speakers use. "you" is always informal "du".
Sentences need not make sense ("the wooden cow reads a letter"), only be grammatical: that
keeps the task about translation rather than world knowledge.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Literal

from num2words import num2words

from qbench.config import SyntheticMTData

Case = Literal["nom", "acc", "dat"]
Gender = Literal["m", "f", "n"]
Tense = Literal["present", "past", "future", "can", "must", "want"]
Pair = tuple[str, str]

# Person and number as an index into conjugation tables: ich, du, er/sie/es, wir, sie (plural).
FIRST_SG, SECOND_SG, THIRD_SG, FIRST_PL, THIRD_PL = range(5)

# ---------------------------------------------------------------- German inflection tables

# Keyed by case, then gender ("m", "f", "n") or "pl".
DEFINITE_ARTICLE = {
    "nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
    "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
    "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"},
}
# Endings of der-words (dieser, jeder), of einige/viele, and of adjectives with no determiner.
STRONG = {
    "nom": {"m": "er", "f": "e", "n": "es", "pl": "e"},
    "acc": {"m": "en", "f": "e", "n": "es", "pl": "e"},
    "dat": {"m": "em", "f": "er", "n": "em", "pl": "en"},
}
# Endings of ein-words: ein, kein and the possessives (mein, unser, ...).
EIN_WORD = {
    "nom": {"m": "", "f": "e", "n": "", "pl": "e"},
    "acc": {"m": "en", "f": "e", "n": "", "pl": "e"},
    "dat": {"m": "em", "f": "er", "n": "em", "pl": "en"},
}
# Adjectives after the definite article or a der-word, which already shows case and gender.
WEAK = {
    "nom": {"m": "e", "f": "e", "n": "e", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
# Adjectives after an ein-word: strong where the ein-word has no ending (ein kleiner Hund), weak elsewhere.
MIXED = {
    "nom": {"m": "er", "f": "e", "n": "es", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "es", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
# Preposition + definite article contractions German uses whenever the article is not stressed.
CONTRACTIONS = {("in", "dem"): "im", ("in", "das"): "ins", ("zu", "dem"): "zum", ("zu", "der"): "zur"}

# Present tense of the verbs that follow no pattern: ich, du, er, wir, sie.
IRREGULAR_PRESENT = {
    "sein": ("bin", "bist", "ist", "sind", "sind"),
    "haben": ("habe", "hast", "hat", "haben", "haben"),
    "werden": ("werde", "wirst", "wird", "werden", "werden"),
    "können": ("kann", "kannst", "kann", "können", "können"),
    "müssen": ("muss", "musst", "muss", "müssen", "müssen"),
    "wollen": ("will", "willst", "will", "wollen", "wollen"),
    "wissen": ("weiß", "weißt", "weiß", "wissen", "wissen"),
}
SEIN_PAST = ("war", "warst", "war", "waren", "waren")
TENSE_AUXILIARY = {"future": "werden", "can": "können", "must": "müssen", "want": "wollen"}

EN_BE_PRESENT = ("am", "are", "is", "are", "are")
EN_BE_PAST = ("was", "were", "was", "were", "were")


def conjugate_present(infinitive: str, er: str | None = None, du: str | None = None) -> tuple[str, ...]:
    """ich, du, er, wir, sie forms; `er`/`du` override stem-changing forms (sieht, siehst)."""
    if infinitive in IRREGULAR_PRESENT:
        return IRREGULAR_PRESENT[infinitive]
    if infinitive.endswith(("eln", "ern")):  # lächeln, wandern: stem keeps its e, ending -n
        stem = infinitive[:-1]
        ich = stem[:-2] + "le" if infinitive.endswith("eln") else stem + "e"
        return ich, du or stem + "st", er or stem + "t", infinitive, infinitive
    stem = infinitive[:-2]
    # arbeiten -> arbeitest, öffnen -> öffnest, zeichnen -> zeichnest: an e keeps the ending audible;
    # not after a vowel, l, r, m, n or a lengthening h (lernst, kommst, wohnst)
    vowels = "aeiouäöü"
    needs_e = stem.endswith(("t", "d")) or (
        stem[-1] in "mn" and stem[-2] not in vowels + "lrmn" and not (stem[-2] == "h" and stem[-3] in vowels)
    )
    t_ending = "et" if needs_e else "t"
    st_ending = "est" if needs_e else "t" if stem.endswith(("s", "ß", "z", "x")) else "st"
    return stem + "e", du or stem + st_ending, er or stem + t_ending, infinitive, infinitive


def english_third_person(verb: str) -> str:
    """see -> sees, watch -> watches, carry -> carries, look for -> looks for."""
    head, *rest = verb.split()
    if head == "have":
        head = "has"
    elif head.endswith(("s", "sh", "ch", "x", "z", "o")):
        head += "es"
    elif head.endswith("y") and head[-2] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return " ".join([head, *rest])


def english_plural(noun: str) -> str:
    *rest, head = noun.split()
    if head.endswith("man"):
        head = head[:-3] + "men"
    elif head.endswith(("s", "sh", "ch", "x", "z")):
        head += "es"
    elif head.endswith("y") and head[-2] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return " ".join([*rest, head])


# ---------------------------------------------------------------- lexicon


@dataclass(frozen=True)
class Noun:
    en: str
    en_plural: str
    de: str
    de_plural: str
    gender: Gender
    de_oblique: str  # singular outside the nominative: differs for weak masculines (den Jungen)

    def english(self, plural: bool) -> str:
        return self.en_plural if plural else self.en

    def german(self, case: Case, plural: bool) -> str:
        if plural:
            # Dative plural adds -n unless the plural already ends in -n or -s (den Kindern, den Autos).
            return self.de_plural + ("n" if case == "dat" and not self.de_plural.endswith(("n", "s")) else "")
        return self.de if case == "nom" else self.de_oblique


GENDERS: dict[str, Gender] = {"der": "m", "die": "f", "das": "n"}


def _nouns(table: str) -> dict[str, Noun]:
    """Lines `english[/plural] | article German[/oblique] | German plural`."""
    nouns = {}
    for line in table.strip().splitlines():
        en, de, de_plural = (part.strip() for part in line.split("|"))
        en, _, en_plural = en.partition("/")
        article, de = de.split()
        de, _, oblique = de.partition("/")
        gender = GENDERS[article]
        nouns[en] = Noun(en, en_plural or english_plural(en), de, de_plural, gender, oblique or de)
    return nouns


PEOPLE = _nouns("""
    man | der Mann | Männer
    woman | die Frau | Frauen
    child/children | das Kind | Kinder
    boy | der Junge/Jungen | Jungen
    girl | das Mädchen | Mädchen
    teacher | der Lehrer | Lehrer
    doctor | der Arzt | Ärzte
    farmer | der Bauer/Bauern | Bauern
    baker | der Bäcker | Bäcker
    nurse | die Krankenschwester | Krankenschwestern
    driver | der Fahrer | Fahrer
    pilot | der Pilot/Piloten | Piloten
    singer | der Sänger | Sänger
    painter | der Maler | Maler
    writer | der Schriftsteller | Schriftsteller
    student | der Student/Studenten | Studenten
    neighbour | der Nachbar/Nachbarn | Nachbarn
    brother | der Bruder | Brüder
    sister | die Schwester | Schwestern
    mother | die Mutter | Mütter
    father | der Vater | Väter
    uncle | der Onkel | Onkel
    aunt | die Tante | Tanten
    friend | der Freund | Freunde
    king | der König | Könige
    queen | die Königin | Königinnen
    soldier | der Soldat/Soldaten | Soldaten
    lawyer | der Anwalt | Anwälte
    judge | der Richter | Richter
    waiter | der Kellner | Kellner
    cook | der Koch | Köche
    dancer | der Tänzer | Tänzer
    player | der Spieler | Spieler
    visitor | der Besucher | Besucher
    captain | der Kapitän | Kapitäne
    engineer | der Ingenieur | Ingenieure
    gardener | der Gärtner | Gärtner
    fisherman | der Fischer | Fischer
    policeman | der Polizist/Polizisten | Polizisten
    grandmother | die Großmutter | Großmütter
    grandfather | der Großvater | Großväter
    son | der Sohn | Söhne
    daughter | die Tochter | Töchter
    baby | das Baby | Babys
    guest | der Gast | Gäste
    thief/thieves | der Dieb | Diebe
    prince | der Prinz/Prinzen | Prinzen
    princess | die Prinzessin | Prinzessinnen
    witch | die Hexe | Hexen
    hunter | der Jäger | Jäger
    postman | der Briefträger | Briefträger
    lady | die Dame | Damen
    gentleman | der Herr/Herrn | Herren
    customer | der Kunde/Kunden | Kunden
    tourist | der Tourist/Touristen | Touristen
    artist | der Künstler | Künstler
    musician | der Musiker | Musiker
    actor | der Schauspieler | Schauspieler
    worker | der Arbeiter | Arbeiter
    pupil | der Schüler | Schüler
    clown | der Clown | Clowns
    giant | der Riese/Riesen | Riesen
    wizard | der Zauberer | Zauberer
""")

ANIMALS = _nouns("""
    dog | der Hund | Hunde
    cat | die Katze | Katzen
    horse | das Pferd | Pferde
    cow | die Kuh | Kühe
    sheep/sheep | das Schaf | Schafe
    goat | die Ziege | Ziegen
    pig | das Schwein | Schweine
    chicken | das Huhn | Hühner
    duck | die Ente | Enten
    rabbit | das Kaninchen | Kaninchen
    mouse/mice | die Maus | Mäuse
    fox | der Fuchs | Füchse
    wolf/wolves | der Wolf | Wölfe
    bear | der Bär/Bären | Bären
    lion | der Löwe/Löwen | Löwen
    tiger | der Tiger | Tiger
    monkey | der Affe/Affen | Affen
    donkey | der Esel | Esel
    elephant | der Elefant/Elefanten | Elefanten
    frog | der Frosch | Frösche
    snake | die Schlange | Schlangen
    owl | die Eule | Eulen
    eagle | der Adler | Adler
    parrot | der Papagei | Papageien
    whale | der Wal | Wale
    fish/fish | der Fisch | Fische
    goose/geese | die Gans | Gänse
    spider | die Spinne | Spinnen
    turtle | die Schildkröte | Schildkröten
    camel | das Kamel | Kamele
    bird | der Vogel | Vögel
    bee | die Biene | Bienen
    butterfly | der Schmetterling | Schmetterlinge
    squirrel | das Eichhörnchen | Eichhörnchen
    hedgehog | der Igel | Igel
    deer/deer | der Hirsch | Hirsche
    giraffe | die Giraffe | Giraffen
    zebra | das Zebra | Zebras
    penguin | der Pinguin | Pinguine
    shark | der Hai | Haie
    dolphin | der Delfin | Delfine
    crocodile | das Krokodil | Krokodile
    rat | die Ratte | Ratten
    ant | die Ameise | Ameisen
    kangaroo | das Känguru | Kängurus
    puppy | der Welpe/Welpen | Welpen
    kitten | das Kätzchen | Kätzchen
    hamster | der Hamster | Hamster
""")

THINGS = _nouns("""
    book | das Buch | Bücher
    letter | der Brief | Briefe
    key | der Schlüssel | Schlüssel
    box | die Kiste | Kisten
    chair | der Stuhl | Stühle
    table | der Tisch | Tische
    window | das Fenster | Fenster
    door | die Tür | Türen
    lamp | die Lampe | Lampen
    clock | die Uhr | Uhren
    phone | das Telefon | Telefone
    bottle | die Flasche | Flaschen
    cup | die Tasse | Tassen
    glass | das Glas | Gläser
    plate | der Teller | Teller
    knife/knives | das Messer | Messer
    spoon | der Löffel | Löffel
    fork | die Gabel | Gabeln
    basket | der Korb | Körbe
    bag | die Tasche | Taschen
    wallet | die Brieftasche | Brieftaschen
    ticket | die Fahrkarte | Fahrkarten
    map | die Landkarte | Landkarten
    picture | das Bild | Bilder
    camera | die Kamera | Kameras
    radio | das Radio | Radios
    guitar | die Gitarre | Gitarren
    piano | das Klavier | Klaviere
    drum | die Trommel | Trommeln
    ball | der Ball | Bälle
    kite | der Drachen | Drachen
    bicycle | das Fahrrad | Fahrräder
    car | das Auto | Autos
    truck | der Lastwagen | Lastwagen
    boat | das Boot | Boote
    train | der Zug | Züge
    ladder | die Leiter | Leitern
    hammer | der Hammer | Hämmer
    rope | das Seil | Seile
    umbrella | der Regenschirm | Regenschirme
    hat | der Hut | Hüte
    coat | der Mantel | Mäntel
    shirt | das Hemd | Hemden
    shoe | der Schuh | Schuhe
    blanket | die Decke | Decken
    pillow | das Kissen | Kissen
    candle | die Kerze | Kerzen
    mirror | der Spiegel | Spiegel
    bucket | der Eimer | Eimer
    newspaper | die Zeitung | Zeitungen
    envelope | der Umschlag | Umschläge
    pencil | der Bleistift | Bleistifte
    notebook | das Heft | Hefte
    shelf/shelves | das Regal | Regale
    wheel | das Rad | Räder
    fence | der Zaun | Zäune
    bed | das Bett | Betten
    sofa | das Sofa | Sofas
    computer | der Computer | Computer
    bell | die Glocke | Glocken
    ring | der Ring | Ringe
    necklace | die Halskette | Halsketten
    toy | das Spielzeug | Spielzeuge
    doll | die Puppe | Puppen
    gift | das Geschenk | Geschenke
    flower | die Blume | Blumen
    tree | der Baum | Bäume
    stone | der Stein | Steine
    leaf/leaves | das Blatt | Blätter
    suitcase | der Koffer | Koffer
    jacket | die Jacke | Jacken
    scarf/scarves | der Schal | Schals
    glove | der Handschuh | Handschuhe
    sock | die Socke | Socken
    brush | die Bürste | Bürsten
    towel | das Handtuch | Handtücher
    pot | der Topf | Töpfe
    pan | die Pfanne | Pfannen
    bowl | die Schüssel | Schüsseln
    photo | das Foto | Fotos
""")

FOODS = _nouns("""
    apple | der Apfel | Äpfel
    orange | die Orange | Orangen
    banana | die Banane | Bananen
    lemon | die Zitrone | Zitronen
    cherry | die Kirsche | Kirschen
    potato/potatoes | die Kartoffel | Kartoffeln
    tomato/tomatoes | die Tomate | Tomaten
    carrot | die Karotte | Karotten
    onion | die Zwiebel | Zwiebeln
    cake | der Kuchen | Kuchen
    biscuit | der Keks | Kekse
    sandwich | das Sandwich | Sandwiches
    egg | das Ei | Eier
    melon | die Melone | Melonen
    pear | die Birne | Birnen
    peach | der Pfirsich | Pfirsiche
    sausage | die Wurst | Würste
    pizza | die Pizza | Pizzas
    strawberry | die Erdbeere | Erdbeeren
    grape | die Traube | Trauben
    cucumber | die Gurke | Gurken
    pumpkin | der Kürbis | Kürbisse
    nut | die Nuss | Nüsse
    pancake | der Pfannkuchen | Pfannkuchen
    pretzel | die Brezel | Brezeln
    lollipop | der Lutscher | Lutscher
""")

PLACES = _nouns("""
    garden | der Garten | Gärten
    kitchen | die Küche | Küchen
    park | der Park | Parks
    forest | der Wald | Wälder
    house | das Haus | Häuser
    school | die Schule | Schulen
    city | die Stadt | Städte
    village | das Dorf | Dörfer
    room | das Zimmer | Zimmer
    lake | der See | Seen
    river | der Fluss | Flüsse
    church | die Kirche | Kirchen
    museum | das Museum | Museen
    hotel | das Hotel | Hotels
    restaurant | das Restaurant | Restaurants
    shop | der Laden | Läden
    supermarket | der Supermarkt | Supermärkte
    library | die Bibliothek | Bibliotheken
    office | das Büro | Büros
    hospital | das Krankenhaus | Krankenhäuser
    station | der Bahnhof | Bahnhöfe
    castle | das Schloss | Schlösser
    cellar | der Keller | Keller
    barn | die Scheune | Scheunen
    stable | der Stall | Ställe
    tent | das Zelt | Zelte
    bakery | die Bäckerei | Bäckereien
    market | der Markt | Märkte
    cinema | das Kino | Kinos
    theatre | das Theater | Theater
    zoo | der Zoo | Zoos
    bathroom | das Badezimmer | Badezimmer
    bedroom | das Schlafzimmer | Schlafzimmer
    classroom | das Klassenzimmer | Klassenzimmer
    tower | der Turm | Türme
    valley | das Tal | Täler
    desert | die Wüste | Wüsten
    sea | das Meer | Meere
    cave | die Höhle | Höhlen
    shed | der Schuppen | Schuppen
    harbour | der Hafen | Häfen
    airport | der Flughafen | Flughäfen
    factory | die Fabrik | Fabriken
    farm | der Bauernhof | Bauernhöfe
    hall | die Halle | Hallen
    swimming pool | das Schwimmbad | Schwimmbäder
    pond | der Teich | Teiche
    island | die Insel | Inseln
    palace | der Palast | Paläste
    garage | die Garage | Garagen
""")

ANIMATE = {**PEOPLE, **ANIMALS}
OBJECTS = {**THINGS, **FOODS}
NOUNS = {**PEOPLE, **ANIMALS, **THINGS, **FOODS, **PLACES}


@dataclass(frozen=True)
class Adjective:
    en: str
    de: str  # predicative form: der Hund ist dunkel
    de_stem: str  # what attributive endings attach to: der dunkle Hund


def _adjectives(table: str) -> dict[str, Adjective]:
    """Lines `english German [attributive stem]`; the stem defaults to the German minus a final -e."""
    adjectives = {}
    for line in table.strip().splitlines():
        en, de, *stem = line.split()
        adjectives[en] = Adjective(en, de, stem[0] if stem else de.removesuffix("e"))
    return adjectives


ADJECTIVES = _adjectives("""
    small klein
    big groß
    old alt
    young jung
    new neu
    red rot
    blue blau
    green grün
    yellow gelb
    black schwarz
    white weiß
    brown braun
    grey grau
    golden golden
    silver silbern
    wooden hölzern
    broken kaputt
    clean sauber
    dirty schmutzig
    empty leer
    full voll
    bright hell
    dark dunkel dunkl
    quiet leise
    loud laut
    happy glücklich
    sad traurig
    angry wütend
    tired müde
    hungry hungrig
    thirsty durstig
    busy beschäftigt
    lazy faul
    clever klug
    brave mutig
    careful vorsichtig
    curious neugierig
    gentle sanft
    friendly freundlich
    nervous nervös
    polite höflich
    proud stolz
    shy schüchtern
    strange seltsam
    famous berühmt
    beautiful schön
    ugly hässlich
    pretty hübsch
    fresh frisch
    warm warm
    cold kalt
    hot heiß
    wet nass
    dry trocken
    soft weich
    hard hart
    smooth glatt
    sharp scharf
    sweet süß
    bitter bitter
    cheap billig
    expensive teuer teur
    rich reich
    poor arm
    heavy schwer
    light leicht
    long lang
    short kurz
    wide breit
    narrow schmal
    fast schnell
    slow langsam
    strong stark
    weak schwach
    sick krank
    healthy gesund
    kind nett
    funny lustig
    serious ernst
    wild wild
    tame zahm
    calm ruhig
    fat dick
    thin dünn
    round rund
    huge riesig
    tiny winzig
    ancient uralt
    modern modern
    secret geheim
    lonely einsam
    silly albern
    wise weise
    sleepy schläfrig
    good gut
    bad schlecht
    fluffy flauschig
    striped gestreift
    spotted gefleckt
    sour sauer saur
    salty salzig
    delicious lecker
    ripe reif
    colourful bunt
    shiny glänzend
    dusty staubig
    cosy gemütlich
    tidy ordentlich
    messy unordentlich
""")


@dataclass(frozen=True)
class Degree:
    en: str
    de: str


DEGREES = {
    d.en: d
    for d in (
        Degree("very", "sehr"),
        Degree("quite", "ziemlich"),
        Degree("too", "zu"),
        Degree("really", "wirklich"),
    )
}


@dataclass(frozen=True)
class Verb:
    en: str  # base form, possibly with a particle: "look for"
    en_past: str
    de: str  # infinitive
    de_present: tuple[str, ...]  # ich, du, er, wir, sie
    de_auxiliary: Literal["haben", "sein"]  # of the perfect
    de_participle: str
    objects: tuple[Case, ...]  # cases of the objects, indirect before direct (English and German agree)
    motion: bool = False  # takes a direction: into the garden, to the teacher


AUXILIARIES: dict[str, Literal["haben", "sein"]] = {"hat": "haben", "ist": "sein"}


def _verbs(table: str, objects: tuple[Case, ...] = (), motion: bool = False) -> dict[str, Verb]:
    """Lines `english, English past | German[, er form, du form] | hat/ist participle`."""
    verbs = {}
    for line in table.strip().splitlines():
        en, de, perfect = (part.strip() for part in line.split("|"))
        en, en_past = (s.strip() for s in en.split(","))
        de, *changed = (s.strip() for s in de.split(","))
        er, du = changed or (None, None)
        auxiliary, participle = perfect.split()
        verbs[en] = Verb(
            en,
            en_past,
            de,
            conjugate_present(de, er, du),
            AUXILIARIES[auxiliary],
            participle,
            objects,
            motion,
        )
    return verbs


TRANSITIVE = _verbs(
    """
    see, saw | sehen, sieht, siehst | hat gesehen
    find, found | finden | hat gefunden
    buy, bought | kaufen | hat gekauft
    sell, sold | verkaufen | hat verkauft
    take, took | nehmen, nimmt, nimmst | hat genommen
    carry, carried | tragen, trägt, trägst | hat getragen
    hold, held | halten, hält, hältst | hat gehalten
    open, opened | öffnen | hat geöffnet
    close, closed | schließen | hat geschlossen
    break, broke | zerbrechen, zerbricht, zerbrichst | hat zerbrochen
    clean, cleaned | putzen | hat geputzt
    wash, washed | waschen, wäscht, wäschst | hat gewaschen
    paint, painted | malen | hat gemalt
    draw, drew | zeichnen | hat gezeichnet
    build, built | bauen | hat gebaut
    cook, cooked | kochen | hat gekocht
    eat, ate | essen, isst, isst | hat gegessen
    catch, caught | fangen, fängt, fängst | hat gefangen
    throw, threw | werfen, wirft, wirfst | hat geworfen
    push, pushed | schieben | hat geschoben
    pull, pulled | ziehen | hat gezogen
    hide, hid | verstecken | hat versteckt
    lose, lost | verlieren | hat verloren
    keep, kept | behalten, behält, behältst | hat behalten
    need, needed | brauchen | hat gebraucht
    love, loved | lieben | hat geliebt
    hate, hated | hassen | hat gehasst
    watch, watched | beobachten | hat beobachtet
    visit, visited | besuchen | hat besucht
    meet, met | treffen, trifft, triffst | hat getroffen
    call, called | rufen | hat gerufen
    forget, forgot | vergessen, vergisst, vergisst | hat vergessen
    steal, stole | stehlen, stiehlt, stiehlst | hat gestohlen
    choose, chose | wählen | hat gewählt
    count, counted | zählen | hat gezählt
    feed, fed | füttern | hat gefüttert
    chase, chased | jagen | hat gejagt
    touch, touched | berühren | hat berührt
    read, read | lesen, liest, liest | hat gelesen
    write, wrote | schreiben | hat geschrieben
    hear, heard | hören | hat gehört
    ask, asked | fragen | hat gefragt
    kiss, kissed | küssen | hat geküsst
    greet, greeted | begrüßen | hat begrüßt
    fetch, fetched | holen | hat geholt
    look for, looked for | suchen | hat gesucht
    order, ordered | bestellen | hat bestellt
    repair, repaired | reparieren | hat repariert
    collect, collected | sammeln | hat gesammelt
    understand, understood | verstehen | hat verstanden
    wake, woke | wecken | hat geweckt
    bite, bit | beißen | hat gebissen
    kick, kicked | treten, tritt, trittst | hat getreten
    fill, filled | füllen | hat gefüllt
    pack, packed | packen | hat gepackt
    cut, cut | schneiden | hat geschnitten
    protect, protected | schützen | hat geschützt
    lift, lifted | heben | hat gehoben
    pay, paid | bezahlen | hat bezahlt
    miss, missed | vermissen | hat vermisst
    praise, praised | loben | hat gelobt
    photograph, photographed | fotografieren | hat fotografiert
    hug, hugged | umarmen | hat umarmt
    bake, baked | backen | hat gebacken
    smell, smelled | riechen | hat gerochen
    taste, tasted | probieren | hat probiert
""",
    objects=("acc",),
)

DATIVE = _verbs(
    """
    help, helped | helfen, hilft, hilfst | hat geholfen
    follow, followed | folgen | ist gefolgt
    thank, thanked | danken | hat gedankt
    answer, answered | antworten | hat geantwortet
    trust, trusted | vertrauen | hat vertraut
    wave to, waved to | winken | hat gewinkt
    congratulate, congratulated | gratulieren | hat gratuliert
""",
    objects=("dat",),
)

DITRANSITIVE = _verbs(
    """
    give, gave | geben, gibt, gibst | hat gegeben
    show, showed | zeigen | hat gezeigt
    bring, brought | bringen | hat gebracht
    send, sent | schicken | hat geschickt
    lend, lent | leihen | hat geliehen
    promise, promised | versprechen, verspricht, versprichst | hat versprochen
    hand, handed | reichen | hat gereicht
""",
    objects=("dat", "acc"),
)

INTRANSITIVE = _verbs("""
    sleep, slept | schlafen, schläft, schläfst | hat geschlafen
    sing, sang | singen | hat gesungen
    dance, danced | tanzen | hat getanzt
    laugh, laughed | lachen | hat gelacht
    cry, cried | weinen | hat geweint
    smile, smiled | lächeln | hat gelächelt
    wait, waited | warten | hat gewartet
    work, worked | arbeiten | hat gearbeitet
    play, played | spielen | hat gespielt
    sit, sat | sitzen | hat gesessen
    stand, stood | stehen | hat gestanden
    live, lived | wohnen | hat gewohnt
    shout, shouted | schreien | hat geschrien
    whisper, whispered | flüstern | hat geflüstert
    dream, dreamed | träumen | hat geträumt
    talk, talked | reden | hat geredet
    pray, prayed | beten | hat gebetet
    whistle, whistled | pfeifen | hat gepfiffen
    snore, snored | schnarchen | hat geschnarcht
    cough, coughed | husten | hat gehustet
""")

MOTION = _verbs(
    """
    run, ran | laufen, läuft, läufst | ist gelaufen
    go, went | gehen | ist gegangen
    swim, swam | schwimmen | ist geschwommen
    jump, jumped | springen | ist gesprungen
    fall, fell | fallen, fällt, fällst | ist gefallen
    travel, travelled | reisen | ist gereist
    climb, climbed | klettern | ist geklettert
    come, came | kommen | ist gekommen
    drive, drove | fahren, fährt, fährst | ist gefahren
    fly, flew | fliegen | ist geflogen
    hike, hiked | wandern | ist gewandert
    ride, rode | reiten | ist geritten
    hurry, hurried | eilen | ist geeilt
    crawl, crawled | kriechen | ist gekrochen
    sneak, sneaked | schleichen | ist geschlichen
""",
    motion=True,
)

# Verbs that take a dass-clause: "the teacher says that ..."
REPORTING = _verbs("""
    say, said | sagen | hat gesagt
    know, knew | wissen | hat gewusst
    think, thought | denken | hat gedacht
    hope, hoped | hoffen | hat gehofft
    believe, believed | glauben | hat geglaubt
    hear, heard | hören | hat gehört
    notice, noticed | bemerken | hat bemerkt
""")

BE = Verb("be", "was", "sein", IRREGULAR_PRESENT["sein"], "sein", "gewesen", ())
VERBS = {**TRANSITIVE, **DATIVE, **DITRANSITIVE, **INTRANSITIVE, **MOTION}

# ---------------------------------------------------------------- phrases


@dataclass(frozen=True)
class Determiner:
    en_singular: str | None  # None: not used with a singular noun; "a" becomes "an" before a vowel
    en_plural: str | None  # None: not used with a plural noun; "" is the bare plural (dogs)
    de: str  # the German stem endings attach to, or the whole uninflected word
    kind: Literal["article", "der-word", "ein-word", "quantifier", "uninflected"]
    negation: Literal["nicht", "kein"] | None  # how a clause negates an object with it; None: not at all
    definite: bool = False  # a known referent: goes before a time adverb in the middle field

    def german(self, case: Case, key: str) -> str:
        if self.kind == "article":
            return DEFINITE_ARTICLE[case][key]
        if self.kind in ("der-word", "quantifier"):
            return self.de + STRONG[case][key]
        if self.kind == "ein-word":
            return self.de + EIN_WORD[case][key]
        return self.de

    def adjective_endings(self) -> dict[str, dict[str, str]]:
        return {"article": WEAK, "der-word": WEAK, "ein-word": MIXED}.get(self.kind, STRONG)


THE = Determiner("the", "the", "d", "article", "nicht", definite=True)
A = Determiner("a", None, "ein", "ein-word", "kein")
KEIN = Determiner("no", "no", "kein", "ein-word", None)  # German only: the negation of A and bare plurals
THIS = Determiner("this", "these", "dies", "der-word", "nicht", definite=True)
EVERY = Determiner("every", None, "jed", "der-word", None, definite=True)
SOME = Determiner(None, "some", "einig", "quantifier", None)
MANY = Determiner(None, "many", "viel", "quantifier", None)
BARE = Determiner(None, "", "", "uninflected", "kein")
POSSESSIVES = {
    en: Determiner(en, en, de, "ein-word", "nicht", definite=True)
    for en, de in (
        ("my", "mein"),
        ("your", "dein"),
        ("his", "sein"),
        ("her", "ihr"),
        ("our", "unser"),
        ("their", "ihr"),
    )
}


def number(n: int) -> Determiner:
    """A cardinal as an uninflected plural determiner: drei kleine Hunde."""
    return Determiner(None, num2words(n), num2words(n, lang="de"), "uninflected", None)


NUMBERS = tuple(number(n) for n in range(2, 100))  # num2words is slow: spell each number once


@dataclass(frozen=True)
class NounPhrase:
    determiner: Determiner
    noun: Noun
    adjectives: tuple[Adjective, ...] = ()
    plural: bool = False
    negated: bool = False  # German "kein" for English "a"/bare plural in a negated clause

    @property
    def person(self) -> int:
        return THIRD_PL if self.plural else THIRD_SG

    @property
    def definite(self) -> bool:
        return self.determiner.definite

    @property
    def negation(self) -> str | None:
        return self.determiner.negation

    def english(self, subject: bool = True) -> list[str]:
        words = [a.en for a in self.adjectives] + self.noun.english(self.plural).split()
        article = self.determiner.en_plural if self.plural else self.determiner.en_singular
        if article == "a" and words[0][0] in "aeiou":  # the lexicon has no "hour" or "unicorn"
            article = "an"
        return [article, *words] if article else words

    def german(self, case: Case) -> list[str]:
        key = "pl" if self.plural else self.noun.gender
        determiner = KEIN if self.negated else self.determiner
        article = determiner.german(case, key)
        ending = determiner.adjective_endings()[case][key]
        return [
            *([article] if article else []),
            *(a.de_stem + ending for a in self.adjectives),
            self.noun.german(case, self.plural),
        ]


@dataclass(frozen=True)
class Pronoun:
    en: str
    en_object: str
    de: tuple[str, str, str]  # nominative, accusative, dative
    person: int
    definite = True
    negation = "nicht"

    def english(self, subject: bool = True) -> list[str]:
        return [self.en if subject else self.en_object]

    def german(self, case: Case) -> list[str]:
        return [self.de[("nom", "acc", "dat").index(case)]]


PRONOUNS = {
    p.en: p
    for p in (
        Pronoun("I", "me", ("ich", "mich", "mir"), FIRST_SG),
        Pronoun("you", "you", ("du", "dich", "dir"), SECOND_SG),
        Pronoun("he", "him", ("er", "ihn", "ihm"), THIRD_SG),
        Pronoun("she", "her", ("sie", "sie", "ihr"), THIRD_SG),
        Pronoun("we", "us", ("wir", "uns", "uns"), FIRST_PL),
        Pronoun("they", "them", ("sie", "sie", "ihnen"), THIRD_PL),
    )
}


@dataclass(frozen=True)
class Name:
    name: str
    person = THIRD_SG
    definite = True
    negation = "nicht"

    def english(self, subject: bool = True) -> list[str]:
        return [self.name]

    def german(self, case: Case) -> list[str]:
        return [self.name]


NAMES = """Anna Peter Maria Thomas Paul Lisa Martin Julia Max Lena Eva David Daniel Laura Sarah Emma Ben
           Felix Sophie Tim Nina Jonas Clara Simon Leon Mia Hannah Theo Sebastian Greta""".split()

Phrase = NounPhrase | Pronoun | Name


@dataclass(frozen=True)
class Preposition:
    en: str
    de: str
    case: Case


PREPOSITIONS = {
    p.en: p
    for p in (
        Preposition("in", "in", "dat"),
        Preposition("on", "auf", "dat"),
        Preposition("under", "unter", "dat"),
        Preposition("behind", "hinter", "dat"),
        Preposition("next to", "neben", "dat"),
        Preposition("in front of", "vor", "dat"),
        Preposition("with", "mit", "dat"),
        Preposition("without", "ohne", "acc"),
        Preposition("for", "für", "acc"),
        Preposition("into", "in", "acc"),
        Preposition("through", "durch", "acc"),
        Preposition("to", "zu", "dat"),
    )
}
LOCATIVE = ("in", "on", "under", "behind", "next to", "in front of")
ACCOMPANYING = ("with", "without", "for")
DIRECTIONAL = ("into", "through", "to")


@dataclass(frozen=True)
class PrepositionalPhrase:
    preposition: Preposition
    object: Phrase

    def english(self) -> list[str]:
        return [*self.preposition.en.split(), *self.object.english(subject=False)]

    def german(self) -> list[str]:
        words = self.object.german(self.preposition.case)
        if isinstance(self.object, NounPhrase) and self.object.determiner is THE:
            contraction = CONTRACTIONS.get((self.preposition.de, words[0]))
            if contraction:
                return [contraction, *words[1:]]
        return [self.preposition.de, *words]


@dataclass(frozen=True)
class AdjectivePredicate:
    adjective: Adjective
    degree: Degree | None = None

    def english(self) -> list[str]:
        return [*([self.degree.en] if self.degree else []), self.adjective.en]

    def german(self) -> list[str]:
        return [*([self.degree.de] if self.degree else []), self.adjective.de]


@dataclass(frozen=True)
class Age:
    years: int

    def english(self) -> list[str]:
        return [num2words(self.years), "years", "old"]

    def german(self) -> list[str]:
        return [num2words(self.years, lang="de"), "Jahre", "alt"]


Complement = PrepositionalPhrase | AdjectivePredicate | Age


@dataclass(frozen=True)
class TimeExpression:
    en: str
    de: str
    tenses: frozenset[str]


_NOW = frozenset({"present", "can", "must", "want"})
_LATER = frozenset({"future", "can", "must", "want"})
_ANY = _NOW | _LATER | {"past"}
TIMES = {
    t.en: t
    for t in (
        *(
            TimeExpression(en, de, _NOW)
            for en, de in (
                ("today", "heute"),
                ("now", "jetzt"),
                ("every day", "jeden Tag"),
                ("every morning", "jeden Morgen"),
                ("every evening", "jeden Abend"),
                ("in the morning", "am Morgen"),
                ("in the evening", "am Abend"),
                ("at night", "in der Nacht"),
                ("sometimes", "manchmal"),
                ("often", "oft"),
                ("in the summer", "im Sommer"),
                ("in the winter", "im Winter"),
            )
        ),
        *(
            TimeExpression(en, de, frozenset({"past"}))
            for en, de in (
                ("yesterday", "gestern"),
                ("last week", "letzte Woche"),
                ("last year", "letztes Jahr"),
                ("this morning", "heute Morgen"),
                ("yesterday evening", "gestern Abend"),
                ("last night", "letzte Nacht"),
            )
        ),
        *(
            TimeExpression(en, de, _LATER)
            for en, de in (
                ("tomorrow", "morgen"),
                ("next week", "nächste Woche"),
                ("next year", "nächstes Jahr"),
                ("soon", "bald"),
                ("later", "später"),
                ("tomorrow evening", "morgen Abend"),
            )
        ),
        *(
            TimeExpression(f"on {en}", f"am {de}", frozenset({"past"}) | _LATER)
            for en, de in (
                ("Monday", "Montag"),
                ("Tuesday", "Dienstag"),
                ("Wednesday", "Mittwoch"),
                ("Thursday", "Donnerstag"),
                ("Friday", "Freitag"),
                ("Saturday", "Samstag"),
                ("Sunday", "Sonntag"),
            )
        ),
        *(
            TimeExpression(f"in {en}", f"im {de}", _ANY)
            for en, de in (
                ("January", "Januar"),
                ("March", "März"),
                ("May", "Mai"),
                ("July", "Juli"),
                ("September", "September"),
                ("November", "November"),
            )
        ),
    )
}


@dataclass(frozen=True)
class Conjunction:
    en: str
    de: str
    en_comma: bool = False  # English puts a comma before it when the clause comes second


CONJUNCTIONS = {
    c.en: c
    for c in (
        Conjunction("because", "weil"),
        Conjunction("although", "obwohl", en_comma=True),
        Conjunction("while", "während", en_comma=True),
        Conjunction("if", "wenn"),
        Conjunction("before", "bevor"),
        Conjunction("as soon as", "sobald"),
        Conjunction("until", "bis"),
    )
}
THAT = Conjunction("that", "dass")

# ---------------------------------------------------------------- clauses


def english_verb(
    verb: Verb, tense: Tense, person: int, negative: bool = False, question: bool = False
) -> tuple[list[str], list[str]]:
    """The English verb group as (words before the subject, words after it); statements have no
    words before the subject, questions invert the auxiliary (does the dog see ...)."""
    if verb is BE and tense in ("present", "past"):
        form = (EN_BE_PRESENT if tense == "present" else EN_BE_PAST)[person]
        after = ["not"] if negative else []
        return ([form], after) if question else ([], [form, *after])
    base = verb.en.split()
    third = person == THIRD_SG
    if not (negative or question):
        if tense == "present":
            return [], english_third_person(verb.en).split() if third else base
        if tense == "past":
            return [], verb.en_past.split()
        if tense == "want":
            return [], ["wants" if third else "want", "to", *base]
    auxiliary = {
        "present": "does" if third else "do",
        "past": "did",
        "future": "will",
        "can": "can",
        "must": "must",
        "want": "does" if third else "do",
    }[tense]
    main = ["want", "to", *base] if tense == "want" else base
    if question:
        return [auxiliary], main
    if negative:
        return [], (["cannot"] if auxiliary == "can" else [auxiliary, "not"]) + main
    return [], [auxiliary, *main]


def german_verb(verb: Verb, tense: Tense, person: int) -> tuple[str, list[str]]:
    """The finite verb and the right bracket: the participle or infinitive that ends the clause."""
    if tense == "present":
        return verb.de_present[person], []
    if tense == "past":
        if verb is BE:
            return SEIN_PAST[person], []
        return IRREGULAR_PRESENT[verb.de_auxiliary][person], [verb.de_participle]
    return IRREGULAR_PRESENT[TENSE_AUXILIARY[tense]][person], [verb.de]


@dataclass(frozen=True)
class GermanClause:
    """A German clause cut into the fields word order moves around."""

    subject: list[str]
    finite: str
    middle: list[str]  # objects, time, nicht, adverbial or predicate
    right: list[str]  # participle or infinitive

    def verb_second(self, fronted: list[str] | None = None) -> list[str]:
        if fronted:
            return [*fronted, self.finite, *self.subject, *self.middle, *self.right]
        return [*self.subject, self.finite, *self.middle, *self.right]

    def verb_first(self) -> list[str]:
        return [self.finite, *self.subject, *self.middle, *self.right]

    def verb_final(self) -> list[str]:
        return [*self.subject, *self.middle, *self.right, self.finite]


@dataclass(frozen=True)
class Clause:
    subject: Phrase
    verb: Verb
    tense: Tense = "present"
    objects: tuple[Phrase, ...] = ()  # one per verb.objects case
    complement: Complement | None = None  # an adverbial phrase, or the predicate of "be"
    time: TimeExpression | None = None
    negative: bool = False

    def __post_init__(self) -> None:
        if len(self.objects) != len(self.verb.objects):
            raise ValueError(
                f"{self.verb.en!r} takes {len(self.verb.objects)} object(s), got {len(self.objects)}"
            )
        if self.negative and not self.can_negate(self.verb, self.tense, self.objects):
            raise ValueError("this clause has no natural negation (must, every/some/many/numbers as objects)")

    @staticmethod
    def can_negate(verb: Verb, tense: Tense, objects: tuple[Phrase, ...]) -> bool:
        """German negates with "nicht" after definite objects or with "kein" on a final indefinite
        one; "must not" (darf nicht) and quantified objects (nicht jeden Hund) are left out."""
        kinds = [o.negation for o in objects]
        return (
            tense != "must" and all(k == "nicht" for k in kinds[:-1]) and (not kinds or kinds[-1] is not None)
        )

    def english(self, question: bool = False, with_time: bool = True) -> list[str]:
        before, after = english_verb(self.verb, self.tense, self.subject.person, self.negative, question)
        words = [*before, *self.subject.english(subject=True), *after]
        for obj in self.objects:
            words += obj.english(subject=False)
        if self.complement:
            words += self.complement.english()
        if self.time and with_time:
            words += self.time.en.split()
        return words

    def german(self, with_time: bool = True) -> GermanClause:
        finite, right = german_verb(self.verb, self.tense, self.subject.person)
        objects = list(self.objects)
        kein = self.negative and bool(objects) and objects[-1].negation == "kein"
        if kein:
            last = objects[-1]
            assert isinstance(last, NounPhrase)  # pronouns and names negate with nicht
            objects[-1] = replace(last, negated=True)
        time = self.time.de.split() if self.time and with_time else []
        middle: list[str] = []
        for obj, case in zip(objects, self.verb.objects, strict=True):
            if time and not obj.definite:  # new information follows the time: hat gestern einen Hund gesehen
                middle += time
                time = []
            middle += obj.german(case)
        middle += time
        if self.negative and not kein:
            middle.append("nicht")
        if self.complement:
            middle += self.complement.german()
        return GermanClause(self.subject.german("nom"), finite, middle, right)


# ---------------------------------------------------------------- sentences


def sentence(words: list[str], end: str = ".") -> str:
    text = " ".join(words).replace(" ,", ",") + end
    return text[0].upper() + text[1:]


def statement(clause: Clause, front_time: bool = False) -> Pair:
    """A main clause; with `front_time` the time comes first and German inverts (Gestern hat er ...)."""
    if front_time and clause.time:
        fronted = clause.time.en.split()
        return (
            sentence([*fronted, *clause.english(with_time=False)]),
            sentence(clause.german(with_time=False).verb_second(clause.time.de.split())),
        )
    return sentence(clause.english()), sentence(clause.german().verb_second())


def question(clause: Clause) -> Pair:
    """A yes/no question: English inverts the auxiliary, German puts the finite verb first."""
    return sentence(clause.english(question=True), "?"), sentence(clause.german().verb_first(), "?")


def subordinate(main: Clause, conjunction: Conjunction, clause: Clause) -> Pair:
    """Main clause, then a subordinate one whose German verb goes last: ..., weil die Katze singt."""
    english = [*main.english(), *([","] if conjunction.en_comma else []), conjunction.en, *clause.english()]
    german = [*main.german().verb_second(), ",", conjunction.de, *clause.german().verb_final()]
    return sentence(english), sentence(german)


def fronted_subordinate(conjunction: Conjunction, clause: Clause, main: Clause) -> Pair:
    """A subordinate clause first: it fills German's first position, so the verb comes before
    the subject (Wenn die Katze singt, schläft der Hund)."""
    first = [conjunction.de, *clause.german().verb_final(), ","]
    english = [conjunction.en, *clause.english(), ",", *main.english()]
    return sentence(english), sentence(main.german().verb_second(first))


def reported(main: Clause, clause: Clause) -> Pair:
    """Speech or thought: "the teacher says that ..." -> "Der Lehrer sagt, dass ..."."""
    return subordinate(main, THAT, clause)


# ---------------------------------------------------------------- random choices

TENSE_WEIGHTS: dict[Tense, int] = {"present": 30, "past": 30, "future": 12, "can": 10, "must": 8, "want": 10}


_POOLS: dict[int, tuple] = {}  # id of a module-level lexicon table -> its values


def _choice(rng: random.Random, table: dict):
    """A random value of a lexicon table (its values are listed once, not on every draw)."""
    pool = _POOLS.get(id(table))
    if pool is None:
        pool = _POOLS[id(table)] = tuple(table.values())
    return rng.choice(pool)


# NUMBERS stands for "a number", drawn uniformly once chosen
PLURAL_DETERMINERS: tuple[Determiner | tuple[Determiner, ...], ...] = (
    THE,
    THIS,
    BARE,
    SOME,
    MANY,
    NUMBERS,
    *POSSESSIVES.values(),
)
PLURAL_WEIGHTS = (30, 6, 12, 6, 6, 12, *(4,) * len(POSSESSIVES))
SINGULAR_DETERMINERS = (THE, A, THIS, EVERY, *POSSESSIVES.values())
SINGULAR_WEIGHTS = (40, 30, 6, 4, *(3,) * len(POSSESSIVES))
ADJECTIVE_POOL = tuple(ADJECTIVES.values())


def random_noun_phrase(rng: random.Random, nouns: dict[str, Noun]) -> NounPhrase:
    noun = _choice(rng, nouns)
    adjectives = tuple(rng.sample(ADJECTIVE_POOL, rng.choices((0, 1, 2), (55, 35, 10))[0]))
    plural = rng.random() < 0.3
    if plural:
        picked = rng.choices(PLURAL_DETERMINERS, PLURAL_WEIGHTS)[0]
        determiner = rng.choice(picked) if isinstance(picked, tuple) else picked  # NUMBERS: one of them
    else:
        determiner = rng.choices(SINGULAR_DETERMINERS, SINGULAR_WEIGHTS)[0]
    return NounPhrase(determiner, noun, adjectives, plural)


def random_animate(rng: random.Random) -> Phrase:
    roll = rng.random()
    if roll < 0.2:
        return _choice(rng, PRONOUNS)
    if roll < 0.3:
        return Name(rng.choice(NAMES))
    return random_noun_phrase(rng, PEOPLE if roll < 0.7 else ANIMALS)


def random_object(rng: random.Random) -> Phrase:
    roll = rng.random()
    if roll < 0.7:
        return random_noun_phrase(rng, OBJECTS if roll < 0.45 else ANIMATE)
    return random_animate(rng)


def random_preposition_phrase(rng: random.Random, kinds: tuple[str, ...]) -> PrepositionalPhrase:
    preposition = PREPOSITIONS[rng.choice(kinds)]
    if preposition.en in ("in", "into", "through"):
        obj: Phrase = random_noun_phrase(rng, PLACES)
    elif preposition.en in LOCATIVE:
        obj = random_noun_phrase(rng, PLACES if rng.random() < 0.5 else THINGS)
    elif preposition.en == "to":
        obj = random_animate(rng)
    else:
        obj = random_object(rng)
    return PrepositionalPhrase(preposition, obj)


def random_clause(
    rng: random.Random,
    tense: Tense | None = None,
    time_probability: float = 0.3,
    negation_probability: float = 0.15,
) -> Clause:
    """A clause of any kind: transitive, dative, ditransitive, intransitive, motion or "be"."""
    tense = tense or rng.choices(list(TENSE_WEIGHTS), list(TENSE_WEIGHTS.values()))[0]
    kind = rng.choices(
        ["transitive", "dative", "ditransitive", "intransitive", "motion", "be"], [34, 8, 10, 16, 14, 18]
    )[0]
    complement: Complement | None = None
    objects: tuple[Phrase, ...] = ()
    if kind == "be":
        verb = BE
        subject = random_animate(rng) if rng.random() < 0.6 else random_noun_phrase(rng, OBJECTS)
        roll = rng.random()
        if roll < 0.55:
            degree = _choice(rng, DEGREES) if rng.random() < 0.3 else None
            complement = AdjectivePredicate(_choice(rng, ADJECTIVES), degree)
        elif roll < 0.85 or (isinstance(subject, NounPhrase) and subject.noun.en in OBJECTS):
            complement = random_preposition_phrase(rng, LOCATIVE)  # things have no age
        else:
            complement = Age(rng.randint(2, 99))
    else:
        verb = _choice(
            rng,
            {
                "transitive": TRANSITIVE,
                "dative": DATIVE,
                "ditransitive": DITRANSITIVE,
                "intransitive": INTRANSITIVE,
                "motion": MOTION,
            }[kind],
        )
        subject = random_animate(rng)
        objects = tuple(random_animate(rng) if case == "dat" else random_object(rng) for case in verb.objects)
        if kind == "ditransitive":  # the thing given: an acc pronoun would move before the dative
            objects = (objects[0], random_noun_phrase(rng, OBJECTS))
        if verb.motion and rng.random() < 0.6:
            complement = random_preposition_phrase(rng, DIRECTIONAL)
        elif rng.random() < (0.4 if not objects else 0.2):
            complement = random_preposition_phrase(rng, LOCATIVE + ACCOMPANYING)
    time = None
    if rng.random() < time_probability:
        time = rng.choice([t for t in TIMES.values() if tense in t.tenses])
    negative = rng.random() < negation_probability and Clause.can_negate(verb, tense, objects)
    return Clause(subject, verb, tense, objects, complement, time, negative)


def make_pair(rng: random.Random) -> Pair:
    roll = rng.random()
    if roll < 0.5:
        clause = random_clause(rng)
        return statement(clause, front_time=rng.random() < 0.4)
    if roll < 0.6:
        return question(random_clause(rng, negation_probability=0.0))
    if roll < 0.72:
        main = Clause(random_animate(rng), _choice(rng, REPORTING), rng.choice(["present", "past"]))
        return reported(main, random_clause(rng, time_probability=0.15))
    conjunction = _choice(rng, CONJUNCTIONS)
    # "if"/"as soon as"/"until" clauses are about the present or future: their verb is present tense.
    conditional = conjunction.en in ("if", "as soon as", "until")
    clause = random_clause(rng, "present" if conditional else None, time_probability=0.1)
    main_tense: Tense | None = rng.choice(["present", "future", "can", "must"]) if conditional else None
    main = random_clause(rng, main_tense, time_probability=0.1)
    if roll < 0.87:
        return subordinate(main, conjunction, clause)
    return fronted_subordinate(conjunction, clause, main)


def make_pairs(n: int, rng: random.Random) -> list[Pair]:
    """n (English, German) pairs drawn from the grammar with `rng`."""
    return [make_pair(rng) for _ in range(n)]


def english_vocabulary() -> set[str]:
    """Every English word (lower case, hyphenated numbers split) the grammar can produce."""
    phrases = [
        *(form for noun in NOUNS.values() for form in (noun.en, noun.en_plural)),
        *ADJECTIVES,
        *DEGREES,
        *NAMES,
        *PREPOSITIONS,
        *CONJUNCTIONS,
        THAT.en,
        *TIMES,
        *(
            form
            for verb in (*VERBS.values(), *REPORTING.values())
            for form in (verb.en, verb.en_past, english_third_person(verb.en))
        ),
        *EN_BE_PRESENT,
        *EN_BE_PAST,
        "be",
        "do",
        "does",
        "did",
        "not",
        "will",
        "can",
        "cannot",
        "must",
        "want",
        "wants",
        "to",
        "years",
        "old",
        "an",
        *(p.en for p in PRONOUNS.values()),
        *(p.en_object for p in PRONOUNS.values()),
        *(d.en_singular or "" for d in (THE, A, THIS, EVERY, *POSSESSIVES.values())),
        *(d.en_plural or "" for d in (THE, THIS, SOME, MANY)),
        *(num2words(n) for n in range(2, 100)),
    ]
    return {word for phrase in phrases for word in re.split(r"[\s-]+", phrase.lower()) if word}


# ---------------------------------------------------------------- the data source

SPLITS = ("train", "valid", "test")


def _new_pairs(n: int, rng: random.Random, seen: set[str]) -> list[Pair]:
    """n pairs whose English is not in `seen`, and distinct among themselves (added to `seen`)."""
    pairs: list[Pair] = []
    while len(pairs) < n:
        pair = make_pair(rng)
        if pair[0] not in seen:
            seen.add(pair[0])
            pairs.append(pair)
    return pairs


def load_synthetic_mt(cfg: SyntheticMTData) -> dict[str, list[Pair]]:
    """Train/valid/test pairs, deterministic from `cfg.seed`. Held-out English sentences never
    occur in train (short ones like "She sleeps." would otherwise be in both); train keeps its
    own repeats, as natural data has them."""
    held_out: set[str] = set()
    test = _new_pairs(cfg.test_sentences, random.Random(f"synthetic-mt-{cfg.seed}-test"), held_out)
    valid = _new_pairs(cfg.valid_sentences, random.Random(f"synthetic-mt-{cfg.seed}-valid"), held_out)
    rng = random.Random(f"synthetic-mt-{cfg.seed}-train")
    train: list[Pair] = []
    while len(train) < cfg.train_sentences:
        pair = make_pair(rng)
        if pair[0] not in held_out:
            train.append(pair)
    return {"train": train, "valid": valid, "test": test}
