"""Names for the Westmere test population: its own lists, weights and spelling variants.

Forenames are the commonest names registered for babies in England and Wales by era (ONS baby
names, rounded shares within each list), surnames the commonest in England and Wales (ONS
surname frequencies from the 2000s NHS Central Register, rounded per 100,000 people), with a
South Asian Muslim and an Eastern European pool for the two communities the borough holds. The
weights are rounded on purpose: the population must look like a real one, not reproduce one.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

# (name, weight) per era of birth, by sex. Eras: before 1960, 1960-1989, 1990 onward.
_MALE: dict[str, list[tuple[str, int]]] = {
    "old": [
        ("John", 90),
        ("William", 60),
        ("David", 55),
        ("Peter", 50),
        ("Michael", 45),
        ("Robert", 45),
        ("James", 45),
        ("Brian", 35),
        ("Alan", 35),
        ("Kenneth", 30),
        ("George", 30),
        ("Ronald", 28),
        ("Anthony", 28),
        ("Thomas", 28),
        ("Colin", 25),
        ("Roy", 22),
        ("Keith", 22),
        ("Derek", 22),
        ("Dennis", 20),
        ("Raymond", 20),
        ("Frank", 18),
        ("Arthur", 18),
        ("Harold", 15),
        ("Stanley", 15),
        ("Eric", 15),
        ("Geoffrey", 14),
        ("Bernard", 12),
        ("Norman", 12),
        ("Leslie", 12),
        ("Graham", 12),
        ("Terence", 12),
        ("Barry", 12),
        ("Malcolm", 10),
        ("Gordon", 10),
        ("Philip", 10),
    ],
    "mid": [
        ("David", 60),
        ("Paul", 55),
        ("Mark", 55),
        ("Andrew", 50),
        ("Michael", 45),
        ("Stephen", 45),
        ("John", 40),
        ("Ian", 30),
        ("Richard", 30),
        ("Christopher", 35),
        ("Gary", 28),
        ("Steven", 26),
        ("Robert", 28),
        ("Darren", 22),
        ("Lee", 22),
        ("Jason", 20),
        ("Simon", 20),
        ("Neil", 18),
        ("Martin", 18),
        ("Kevin", 18),
        ("Anthony", 16),
        ("Jonathan", 15),
        ("Daniel", 18),
        ("Matthew", 20),
        ("James", 25),
        ("Craig", 12),
        ("Wayne", 12),
        ("Dean", 10),
        ("Shaun", 10),
        ("Carl", 10),
        ("Philip", 10),
        ("Peter", 12),
        ("Thomas", 12),
        ("Scott", 10),
        ("Adam", 10),
    ],
    "new": [
        ("Jack", 40),
        ("Thomas", 38),
        ("James", 36),
        ("Joshua", 34),
        ("Daniel", 30),
        ("Harry", 30),
        ("Samuel", 26),
        ("Joseph", 24),
        ("Matthew", 22),
        ("Oliver", 30),
        ("Callum", 16),
        ("Luke", 18),
        ("William", 20),
        ("Lewis", 14),
        ("Ryan", 16),
        ("Benjamin", 16),
        ("George", 18),
        ("Alexander", 14),
        ("Charlie", 16),
        ("Jacob", 16),
        ("Noah", 14),
        ("Leo", 12),
        ("Ethan", 14),
        ("Alfie", 12),
        ("Liam", 10),
        ("Connor", 10),
        ("Kyle", 8),
        ("Jake", 12),
        ("Max", 10),
        ("Oscar", 10),
        ("Archie", 10),
        ("Freddie", 8),
        ("Logan", 8),
        ("Dylan", 10),
        ("Mason", 8),
    ],
}
_FEMALE: dict[str, list[tuple[str, int]]] = {
    "old": [
        ("Margaret", 70),
        ("Mary", 60),
        ("Patricia", 40),
        ("Jean", 40),
        ("Joan", 38),
        ("Barbara", 35),
        ("Sheila", 30),
        ("Dorothy", 28),
        ("Doreen", 22),
        ("Irene", 22),
        ("Kathleen", 25),
        ("Elizabeth", 30),
        ("Pauline", 20),
        ("Maureen", 22),
        ("Christine", 20),
        ("Brenda", 22),
        ("Valerie", 18),
        ("Sylvia", 15),
        ("Eileen", 18),
        ("Joyce", 18),
        ("Betty", 15),
        ("Audrey", 14),
        ("Marjorie", 12),
        ("Pamela", 18),
        ("Janet", 18),
        ("Susan", 20),
        ("Ann", 22),
        ("Anne", 16),
        ("Catherine", 12),
        ("Gillian", 12),
    ],
    "mid": [
        ("Sarah", 50),
        ("Susan", 35),
        ("Julie", 40),
        ("Karen", 40),
        ("Claire", 35),
        ("Lisa", 38),
        ("Nicola", 32),
        ("Helen", 30),
        ("Emma", 30),
        ("Rachel", 28),
        ("Joanne", 25),
        ("Michelle", 28),
        ("Deborah", 20),
        ("Tracey", 20),
        ("Amanda", 22),
        ("Alison", 18),
        ("Louise", 22),
        ("Catherine", 16),
        ("Kelly", 18),
        ("Samantha", 18),
        ("Elizabeth", 15),
        ("Laura", 18),
        ("Kerry", 12),
        ("Caroline", 14),
        ("Jennifer", 12),
        ("Victoria", 12),
        ("Angela", 14),
        ("Dawn", 10),
        ("Gemma", 12),
        ("Hayley", 10),
    ],
    "new": [
        ("Emily", 36),
        ("Chloe", 34),
        ("Jessica", 32),
        ("Sophie", 32),
        ("Olivia", 30),
        ("Lauren", 26),
        ("Hannah", 26),
        ("Charlotte", 24),
        ("Amy", 24),
        ("Megan", 22),
        ("Ellie", 20),
        ("Grace", 20),
        ("Lucy", 22),
        ("Isabella", 16),
        ("Amelia", 18),
        ("Ella", 14),
        ("Mia", 14),
        ("Ava", 12),
        ("Isla", 12),
        ("Evie", 12),
        ("Holly", 12),
        ("Katie", 12),
        ("Rebecca", 14),
        ("Bethany", 10),
        ("Abigail", 10),
        ("Poppy", 10),
        ("Ruby", 12),
        ("Freya", 10),
        ("Lily", 14),
        ("Georgia", 10),
    ],
}
_MALE_SOUTH_ASIAN = [
    ("Mohammed", 60),
    ("Muhammad", 45),
    ("Mohammad", 20),
    ("Ali", 20),
    ("Ahmed", 18),
    ("Imran", 14),
    ("Tariq", 10),
    ("Zahid", 8),
    ("Asif", 10),
    ("Shahid", 10),
    ("Hamza", 12),
    ("Ibrahim", 12),
    ("Yusuf", 10),
    ("Bilal", 10),
    ("Adam", 10),
    ("Zain", 8),
    ("Usman", 8),
    ("Abdul", 12),
    ("Rizwan", 6),
    ("Amir", 8),
]
_FEMALE_SOUTH_ASIAN = [
    ("Fatima", 25),
    ("Ayesha", 20),
    ("Aisha", 18),
    ("Zainab", 16),
    ("Maryam", 18),
    ("Khadija", 12),
    ("Amina", 14),
    ("Nazia", 10),
    ("Shazia", 10),
    ("Sana", 12),
    ("Hafsa", 10),
    ("Iqra", 10),
    ("Samina", 8),
    ("Rukhsana", 8),
    ("Safia", 6),
]
_MALE_EAST_EUROPEAN = [
    ("Piotr", 20),
    ("Tomasz", 18),
    ("Krzysztof", 15),
    ("Pawel", 14),
    ("Marcin", 14),
    ("Andrzej", 10),
    ("Jan", 12),
    ("Jakub", 14),
    ("Lukasz", 12),
    ("Michal", 12),
    ("Ionut", 8),
    ("Andrei", 10),
    ("Mihai", 8),
    ("Bogdan", 6),
    ("Adrian", 8),
]
_FEMALE_EAST_EUROPEAN = [
    ("Anna", 22),
    ("Katarzyna", 16),
    ("Agnieszka", 14),
    ("Magdalena", 12),
    ("Joanna", 12),
    ("Ewa", 10),
    ("Monika", 12),
    ("Natalia", 10),
    ("Zuzanna", 8),
    ("Maria", 10),
    ("Elena", 10),
    ("Ioana", 8),
    ("Andreea", 8),
    ("Alina", 8),
    ("Oana", 6),
]
_SURNAMES = {
    "british": [
        ("Smith", 1260), ("Jones", 930), ("Williams", 660), ("Taylor", 560), ("Brown", 540),
        ("Davies", 500), ("Evans", 420), ("Wilson", 410), ("Thomas", 390), ("Johnson", 370),
        ("Roberts", 360), ("Robinson", 300), ("Thompson", 300), ("Wright", 295), ("Walker", 290),
        ("White", 280), ("Edwards", 275), ("Hughes", 270), ("Green", 265), ("Hall", 260),
        ("Lewis", 255), ("Harris", 250), ("Clarke", 245), ("Jackson", 240), ("Wood", 235),
        ("Turner", 225), ("Martin", 220), ("Cooper", 215), ("Hill", 215), ("Ward", 210),
        ("Morris", 205), ("Moore", 200), ("Clark", 195), ("Lee", 190), ("King", 190),
        ("Baker", 185), ("Harrison", 180), ("Morgan", 180), ("Allen", 175), ("James", 175),
        ("Scott", 170), ("Phillips", 165), ("Watson", 165), ("Davis", 160), ("Parker", 160),
        ("Price", 155), ("Bennett", 155), ("Young", 150), ("Griffiths", 150), ("Mitchell", 150),
        ("Kelly", 145), ("Cook", 145), ("Carter", 140), ("Richardson", 140), ("Bailey", 135),
        ("Collins", 135), ("Bell", 130), ("Shaw", 130), ("Murphy", 125), ("Miller", 125),
        ("Cox", 120), ("Richards", 120), ("Marshall", 115), ("Anderson", 115),
        ("Simpson", 110), ("Ellis", 110), ("Adams", 110), ("Wilkinson", 105), ("Foster", 105),
        ("Chapman", 100), ("Powell", 100), ("Webb", 100), ("Rogers", 98), ("Gray", 96),
        ("Mason", 95), ("Hunt", 94), ("Campbell", 92), ("Matthews", 90), ("Owen", 90),
        ("Palmer", 88), ("Holmes", 86), ("Mills", 85), ("Barnes", 84), ("Knight", 83),
        ("Lloyd", 82), ("Butler", 81), ("Russell", 80), ("Barker", 78), ("Fisher", 77),
        ("Stevens", 76), ("Jenkins", 75), ("Murray", 74), ("Dixon", 73), ("Harvey", 72),
        ("Graham", 70), ("Pearson", 69), ("Ahmed", 40), ("Fletcher", 66), ("Walsh", 65),
        ("Kaur", 30), ("Gibson", 62), ("Howard", 62), ("Andrews", 60), ("Stewart", 60),
        ("Elliott", 58), ("Reynolds", 57), ("Saunders", 56), ("Payne", 55), ("Fox", 55),
        ("Ford", 54), ("Pearce", 53), ("Day", 52), ("Brooks", 51), ("West", 50),
        ("Lawrence", 50), ("Cole", 49), ("Atkinson", 48), ("Bradley", 47), ("Spencer", 47),
        ("Gill", 46), ("Dawson", 45), ("Ball", 44), ("Burton", 44), ("O'Brien", 43),
        ("Watts", 42), ("Rose", 42), ("Booth", 41), ("Perry", 41), ("Ryan", 40),
        ("Grant", 40), ("Wells", 39), ("Armstrong", 38), ("Francis", 38), ("Rees", 37),
        ("Hayes", 37), ("Hart", 36), ("Hudson", 36), ("Newman", 35), ("Barrett", 35),
        ("Kennedy", 34), ("Robertson", 34), ("Bird", 33), ("Gardner", 33), ("Ross", 32),
        ("Smith-Jones", 4), ("Lloyd-Williams", 3), ("Bowes-Lyon", 1), ("Hughes-Davies", 3),
    ],
    "south_asian": [
        ("Khan", 220), ("Ali", 160), ("Hussain", 150), ("Ahmed", 120), ("Begum", 90),
        ("Akhtar", 60), ("Iqbal", 50), ("Mahmood", 45), ("Shah", 40), ("Rashid", 30),
        ("Bibi", 30), ("Aslam", 25), ("Hussein", 15), ("Malik", 35), ("Butt", 25),
        ("Riaz", 18), ("Javed", 18), ("Saleem", 15), ("Yousaf", 12), ("Nawaz", 12),
    ],
    "east_european": [
        ("Nowak", 40), ("Kowalski", 30), ("Wisniewski", 20), ("Wojcik", 18),
        ("Kowalczyk", 16), ("Kaminski", 15), ("Lewandowski", 15), ("Zielinski", 12),
        ("Popescu", 15), ("Ionescu", 10), ("Pop", 10), ("Dumitru", 8), ("Stan", 6),
    ],
}  # fmt: skip

# Spellings and short forms one clerk writes for another's name (both directions are used).
VARIANTS: dict[str, tuple[str, ...]] = {
    "CATHERINE": ("KATHRYN", "CATHRYN", "KATHERINE", "KATE", "CATH"),
    "STEPHEN": ("STEVEN", "STEVE"),
    "STEVEN": ("STEPHEN", "STEVE"),
    "PHILIP": ("PHILLIP", "PHIL"),
    "JONATHAN": ("JONATHON", "JON"),
    "JOHN": ("JON", "JACK"),
    "MOHAMMED": ("MUHAMMAD", "MOHAMMAD", "MOHAMED", "MOHD"),
    "MUHAMMAD": ("MOHAMMED", "MUHAMMED", "MOHD"),
    "MOHAMMAD": ("MOHAMMED", "MUHAMMAD"),
    "SARAH": ("SARA",),
    "ELIZABETH": ("LIZ", "BETH", "ELISABETH", "LIZZIE"),
    "MARGARET": ("MAGGIE", "PEGGY", "MAGARET"),
    "CHRISTOPHER": ("CHRIS", "KRISTOPHER"),
    "MICHAEL": ("MIKE", "MICK"),
    "WILLIAM": ("BILL", "WILL", "BILLY"),
    "ROBERT": ("BOB", "ROB", "BOBBY"),
    "ANTHONY": ("TONY", "ANTONY"),
    "NICOLA": ("NICHOLA", "NIKKI"),
    "REBECCA": ("BECKY", "REBEKAH"),
    "ZAINAB": ("ZAYNAB",),
    "AYESHA": ("AISHA", "AYSHA"),
    "AISHA": ("AYESHA",),
    "TOMASZ": ("TOMAS", "TOM"),
    "PAWEL": ("PAUL",),
    "PIOTR": ("PETER",),
    "JAKUB": ("JACOB", "KUBA"),
    "DANIEL": ("DAN", "DANNY"),
    "THOMAS": ("TOM", "TOMMY"),
    "JAMES": ("JIM", "JAMIE"),
    "JOSEPH": ("JOE",),
    "SAMUEL": ("SAM",),
    "MATTHEW": ("MATT",),
    "ALEXANDER": ("ALEX",),
    "DAVID": ("DAVE",),
    "RICHARD": ("RICH", "DICK"),
    "PATRICIA": ("PAT", "TRISH"),
    "SUSAN": ("SUE", "SUZANNE"),
    "DEBORAH": ("DEBBIE", "DEBRA"),
}
SURNAME_VARIANTS: dict[str, tuple[str, ...]] = {
    "HUSSAIN": ("HUSSEIN", "HUSAIN"),
    "HUSSEIN": ("HUSSAIN",),
    "AHMED": ("AHMAD",),
    "MAHMOOD": ("MEHMOOD", "MAHMUD"),
    "CLARKE": ("CLARK",),
    "CLARK": ("CLARKE",),
    "THOMPSON": ("THOMSON",),
    "DAVIES": ("DAVIS",),
    "BEGUM": ("BEGAM",),
    "YOUSAF": ("YUSUF", "YOUSUF"),
    "WISNIEWSKI": ("WISNIEWSKA",),
    "KOWALSKI": ("KOWALSKA",),
}


@dataclass(frozen=True)
class Table:
    """Names with cumulative weights, for drawing by frequency."""

    names: tuple[str, ...]
    cum: tuple[float, ...]

    @staticmethod
    def of(rows: list[tuple[str, int]]) -> Table:
        acc, cum = 0.0, []
        for _, w in rows:
            acc += w
            cum.append(acc)
        return Table(tuple(n for n, _ in rows), tuple(cum))

    def draw(self, rng: random.Random) -> str:
        """A name drawn by weight."""
        return self.names[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]


COMMUNITIES = ("british", "south_asian", "east_european")

_FORENAMES = {("british", "M", era): Table.of(rows) for era, rows in _MALE.items()} | {
    ("british", "F", era): Table.of(rows) for era, rows in _FEMALE.items()
}
_OTHER = {
    ("south_asian", "M"): Table.of(_MALE_SOUTH_ASIAN),
    ("south_asian", "F"): Table.of(_FEMALE_SOUTH_ASIAN),
    ("east_european", "M"): Table.of(_MALE_EAST_EUROPEAN),
    ("east_european", "F"): Table.of(_FEMALE_EAST_EUROPEAN),
}
_SURNAME_TABLES = {c: Table.of(rows) for c, rows in _SURNAMES.items()}


def era(year: int) -> str:
    """The era of a birth year for the forename lists."""
    return "old" if year < 1960 else "mid" if year < 1990 else "new"


def draw_forename(rng: random.Random, sex: str, year: int, community: str) -> str:
    """A forename for a person of this sex, birth year and community."""
    if community != "british" and rng.random() < 0.85:
        return _OTHER[(community, sex)].draw(rng)
    return _FORENAMES[("british", sex, era(year))].draw(rng)


def draw_surname(rng: random.Random, community: str) -> str:
    """A surname of this community (one in ten drawn from the whole borough)."""
    if rng.random() < 0.1:
        community = "british"
    return _SURNAME_TABLES[community].draw(rng)
