"""The sensitive categories of health data, and the codes that put a record in one.

A record in a sensitive category carries a ``meta.security`` label (set by the
source, or derived at ingest by :mod:`consent.labels` from the tables here) and
stays hidden from other hospitals unless the patient opened that category.

Label codes are HL7 v3 ``ActCode`` information-sensitivity codes
(``_ActInformationSensitivityPolicy``), system :data:`LABEL_SYSTEM`. Choices:

* mental health → ``PSY`` (psychiatry disorder information sensitivity), not the
  newer ``MH``/``BH``: ``PSY`` is in every published version of the code system,
  including the one FHIR R4's security-label value set draws on.
* substance use → ``ETH`` (substance abuse information sensitivity), not the
  newer ``SUD``, for the same reason; IHE PCF's sensitive-data value sets also
  key substance use on ``ETH``.
* HIV → ``HIV``; other sexually transmitted infections → ``STD``.
* reproductive health → ``SEX`` (sexuality and reproductive health information
  sensitivity). ``SDV`` (sexual assault, abuse, domestic violence) is a
  different category and not derived here.
* genetic → ``GDIS`` (genetic disease information sensitivity).

The trigger tables are deliberately small and conservative: a code is listed
only where it says the category by itself. What is *not* listed, and why:

* antidepressants (ATC ``N06A``) and antipsychotics (``N05A``) — common
  non-psychiatric uses (amitriptyline and duloxetine for pain, bupropion for
  smoking cessation, low-dose antipsychotics as antiemetics or in delirium).
  A prescription is labelled when its ``reasonCode`` carries a labelled
  diagnosis, or when the source labels it. Lithium (``N05AN``) is specific and
  is listed.
* nucleoside reverse-transcriptase inhibitors (``J05AF``) — tenofovir and
  lamivudine also treat hepatitis B; only the HIV-specific classes are listed.
* pregnancy tests — hCG is also a tumour marker; pregnancy *diagnoses*
  (ICD-10 chapter O) are listed instead.
* local (Chinese national edition) ICD-10 extensions are matched through their
  WHO category (the first three characters), which they keep.

Sources checked: the v3-ActCode ``_ActInformationSensitivityPolicy`` concepts
(HL7 Terminology); LOINC codes by their published long names.
"""

from __future__ import annotations

from dataclasses import dataclass

#: System of the label codes.
LABEL_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

PSY = "PSY"
ETH = "ETH"
HIV = "HIV"
STD = "STD"
SEX = "SEX"
GDIS = "GDIS"


@dataclass(frozen=True, slots=True)
class Category:
    """One sensitive category: its label code, and how people name it."""

    code: str
    display: str  # the v3-ActCode display
    name_en: str
    name_zh: str


#: The sensitive categories, in the order the portal lists them.
CATEGORIES: tuple[Category, ...] = (
    Category(PSY, "psychiatry disorder information sensitivity", "mental health", "精神心理"),
    Category(ETH, "substance abuse information sensitivity", "substance use", "物质使用"),
    Category(HIV, "HIV/AIDS information sensitivity", "HIV", "艾滋病病毒"),
    Category(STD, "sexually transmitted disease information sensitivity",
             "sexually transmitted infections", "性传播疾病"),
    Category(SEX, "sexuality and reproductive health information sensitivity",
             "reproductive health", "生殖健康"),
    Category(GDIS, "genetic disease information sensitivity", "genetic", "遗传"),
)

#: label code → category
BY_CODE: dict[str, Category] = {c.code: c for c in CATEGORIES}

#: Every sensitive label code; what break-the-glass and a default grant hide.
SENSITIVE_CODES: frozenset[str] = frozenset(BY_CODE)

# -- code systems the triggers are written in ---------------------------------

ICD10_SYSTEMS: frozenset[str] = frozenset({
    "http://hl7.org/fhir/sid/icd-10",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "urn:oid:2.16.840.1.113883.6.3",   # ICD-10 (WHO)
    "urn:oid:2.16.840.1.113883.6.90",  # ICD-10-CM
})
LOINC_SYSTEMS: frozenset[str] = frozenset({"http://loinc.org", "urn:oid:2.16.840.1.113883.6.1"})
ATC_SYSTEMS: frozenset[str] = frozenset({"http://www.whocc.no/atc",
                                         "urn:oid:2.16.840.1.113883.6.73"})

#: ICD-10 triggers: (first, last, label). ``first``/``last`` are codes without
#: the dot; a range of three-character categories (``F00``–``F99``) covers all
#: their subcategories; a four-character code covers itself and its children.
#: Ranges may overlap: a code gets every label whose range holds it.
ICD10_RANGES: tuple[tuple[str, str, str], ...] = (
    ("F00", "F09", PSY),   # organic mental disorders (dementia, delirium)
    ("F20", "F99", PSY),   # schizophrenia … behavioural and emotional disorders
    ("X60", "X84", PSY),   # intentional self-harm
    ("F10", "F19", ETH),   # mental and behavioural disorders due to psychoactive substance use
    ("Z502", "Z503", ETH),  # alcohol / drug rehabilitation
    ("Z714", "Z715", ETH),  # alcohol / drug abuse counselling
    ("B20", "B24", HIV),   # HIV disease
    ("Z21", "Z21", HIV),   # asymptomatic HIV infection status
    ("R75", "R75", HIV),   # inconclusive laboratory evidence of HIV
    ("Z206", "Z206", HIV),  # contact with and exposure to HIV
    ("Z717", "Z717", HIV),  # HIV counselling
    ("O987", "O987", HIV),  # HIV disease complicating pregnancy
    ("A50", "A64", STD),   # infections with a predominantly sexual mode of transmission
    ("Z202", "Z202", STD),  # contact with and exposure to sexually transmitted infections
    ("O00", "O99", SEX),   # pregnancy, childbirth and the puerperium
    ("Z30", "Z39", SEX),   # contraception, procreation, pregnancy supervision, delivery
    ("N46", "N46", SEX),   # male infertility
    ("N96", "N98", SEX),   # habitual aborter, female infertility, artificial fertilisation
    ("Q90", "Q99", GDIS),  # chromosomal abnormalities
    ("Z15", "Z15", GDIS),  # genetic susceptibility to disease (ICD-10-CM)
)

#: LOINC triggers: code → labels.
LOINC_CODES: dict[str, tuple[str, ...]] = {
    # HIV
    "7917-8": (HIV,),    # HIV 1 Ab [Presence] in Serum
    "7918-6": (HIV,),    # HIV 1+2 Ab [Presence] in Serum
    "7919-4": (HIV,),    # HIV 2 Ab [Presence] in Serum
    "56888-1": (HIV,),   # HIV 1+2 Ab + HIV 1 p24 Ag [Presence] in Serum or Plasma
    "20447-9": (HIV,),   # HIV 1 RNA [#/volume] (viral load) in Serum or Plasma
    "25835-0": (HIV,),   # HIV 1 RNA [Presence] in Serum or Plasma
    # other sexually transmitted infections
    "21613-5": (STD,),   # Chlamydia trachomatis DNA [Presence] in Specimen by NAA
    "6357-8": (STD,),    # Chlamydia trachomatis DNA [Presence] in Urine by NAA
    "24111-7": (STD,),   # Neisseria gonorrhoeae DNA [Presence] in Specimen by NAA
    "20507-0": (STD,),   # Reagin Ab [Presence] in Serum by RPR (syphilis)
    "24110-9": (STD,),   # Treponema pallidum Ab [Presence] in Serum by Immunoassay
    # substance use
    "3397-7": (ETH,),    # Cocaine [Presence] in Urine
    "19359-9": (ETH,),   # Cocaine [Presence] in Urine by Screen method
    "72109-2": (ETH,),   # AUDIT-C (alcohol use screen)
    # mental health
    "44249-1": (PSY,),   # PHQ-9 quick depression assessment panel
    "44261-6": (PSY,),   # PHQ-9 total score
    "69737-5": (PSY,),   # GAD-7 (generalized anxiety disorder 7 item)
    # genetic
    "51969-4": (GDIS,),  # Genetic analysis report
    "81247-9": (GDIS,),  # Master HL7 genetic variant reporting panel
    "69548-6": (GDIS,),  # Genetic variant assessment
}

#: ATC triggers: code prefix → labels (a prefix covers every code under it).
ATC_PREFIXES: dict[str, tuple[str, ...]] = {
    "J05AG": (HIV,),   # non-nucleoside reverse transcriptase inhibitors
    "J05AR": (HIV,),   # antivirals for treatment of HIV infections, combinations
    "N07BB": (ETH,),   # drugs used in alcohol dependence
    "N07BC": (ETH,),   # drugs used in opioid dependence
    "N05AN": (PSY,),   # lithium
    "G03A": (SEX,),    # hormonal contraceptives for systemic use
    "G02B": (SEX,),    # contraceptives for topical use (intrauterine devices, rings)
}


def normalize_icd10(code: str) -> str:
    """An ICD-10 code as the tables hold it: upper case, no dot, no spaces.

    >>> normalize_icd10(" f32.900 ")
    'F32900'
    """
    return code.strip().upper().replace(".", "").replace(" ", "")
