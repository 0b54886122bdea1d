"""Clinical code tables: LOINC vitals and labs, ICD-10 diagnoses, medications,
allergies, procedures and vaccines.

Units are the ones Chinese laboratories report (SI: mmol/L, µmol/L, g/L,
10*9/L) written as UCUM codes; reference ranges are typical adult ranges.
Each chronic diagnosis names the labs it shifts, so a diabetic's glucose and
HbA1c are high and a hypertensive's blood pressure is, which keeps
value-based searches (``value-quantity=gt7``) selective in a realistic way.

Diagnoses use ICD-10-CM codes (``J45.909`` is a CM code) under
``http://hl7.org/fhir/sid/icd-10-cm``; medications use WHO ATC codes with the
Chinese product name as ``text``.
"""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
CVX = "http://hl7.org/fhir/sid/cvx"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"


@dataclass(frozen=True, slots=True)
class Measure:
    """One quantitative observation: LOINC code, UCUM unit, a normal
    distribution to draw from, decimals shown, and the reference range."""

    code: str
    display: str
    unit: str
    mean: float
    sd: float
    decimals: int
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class Panel:
    """A lab panel: the DiagnosticReport code and the observations it reports."""

    code: str
    display: str
    text: str
    members: tuple[Measure, ...]


VITALS: dict[str, Measure] = {m.code: m for m in (
    Measure("8867-4", "Heart rate", "/min", 76, 11, 0, 60, 100),
    Measure("9279-1", "Respiratory rate", "/min", 17, 2, 0, 12, 20),
    Measure("8310-5", "Body temperature", "Cel", 36.7, 0.35, 1, 36.0, 37.3),
    Measure("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%",
            97.6, 1.3, 0, 95, 100),
    Measure("29463-7", "Body weight", "kg", 0, 0, 1, None, None),
    Measure("8302-2", "Body height", "cm", 0, 0, 1, None, None),
    Measure("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 0, 0, 1, 18.5, 24.0),
)}
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = Measure("8480-6", "Systolic blood pressure", "mm[Hg]", 122, 12, 0, 90, 139)
DIASTOLIC = Measure("8462-4", "Diastolic blood pressure", "mm[Hg]", 77, 8, 0, 60, 89)

_M = Measure
PANELS: dict[str, Panel] = {p.code: p for p in (
    Panel("58410-2", "CBC panel - Blood by Automated count", "血常规", (
        _M("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*9/L",
           6.4, 1.7, 2, 3.5, 9.5),
        _M("789-8", "Erythrocytes [#/volume] in Blood by Automated count", "10*12/L",
           4.6, 0.5, 2, 3.8, 5.8),
        _M("718-7", "Hemoglobin [Mass/volume] in Blood", "g/L", 138, 15, 0, 115, 175),
        _M("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%",
           41.5, 4, 1, 35, 50),
        _M("777-3", "Platelets [#/volume] in Blood by Automated count", "10*9/L",
           230, 55, 0, 125, 350),
    )),
    Panel("51990-0", "Basic metabolic panel - Blood", "肾功能+电解质+血糖", (
        _M("14749-6", "Glucose [Moles/volume] in Serum or Plasma", "mmol/L",
           5.3, 0.6, 2, 3.9, 6.1),
        _M("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 140, 2.5, 0, 137, 147),
        _M("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L",
           4.2, 0.35, 2, 3.5, 5.3),
        _M("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 103, 3, 0, 99, 110),
        _M("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L",
           76, 15, 0, 57, 111),
        _M("22664-7", "Urea [Moles/volume] in Serum or Plasma", "mmol/L", 5.2, 1.3, 2, 3.1, 8.0),
    )),
    Panel("57698-3", "Lipid panel with direct LDL - Serum or Plasma", "血脂四项", (
        _M("14647-2", "Cholesterol [Moles/volume] in Serum or Plasma", "mmol/L",
           4.7, 0.8, 2, None, 5.2),
        _M("14927-8", "Triglyceride [Moles/volume] in Serum or Plasma", "mmol/L",
           1.4, 0.6, 2, None, 1.7),
        _M("14646-4", "Cholesterol in HDL [Moles/volume] in Serum or Plasma", "mmol/L",
           1.3, 0.3, 2, 1.04, None),
        _M("22748-8", "Cholesterol in LDL [Moles/volume] in Serum or Plasma", "mmol/L",
           2.8, 0.7, 2, None, 3.4),
    )),
    Panel("24325-3", "Hepatic function panel - Serum or Plasma", "肝功能", (
        _M("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
           "U/L", 24, 11, 0, 9, 50),
        _M("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
           "U/L", 23, 8, 0, 15, 40),
        _M("14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma", "umol/L",
           12, 5, 1, None, 26),
        _M("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/L", 44, 3.5, 1, 40, 55),
    )),
    Panel("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "糖化血红蛋白", (
        _M("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.4, 0.35, 1, 4.0, 6.0),
    )),
)}


@dataclass(frozen=True, slots=True)
class Drug:
    atc: str
    display: str
    text: str  # Chinese product name and strength
    dose: float
    unit: str  # UCUM
    per_day: int  # administrations per day (0: as needed)
    route: tuple[str, str, str]  # SNOMED code, display, Chinese text


ORAL = ("26643006", "Oral route", "口服")
INHALED = ("447694001", "Respiratory tract route", "吸入")
IV = ("47625008", "Intravenous route", "静脉滴注")


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """An ICD-10-CM diagnosis; ``chronic`` ones go on the problem list and
    stay active, acute ones are encounter diagnoses that resolve.
    ``lab_shift`` moves the mean of LOINC codes (also ``8480-6``/``8462-4``)."""

    code: str
    display: str
    text: str
    chronic: bool
    drugs: tuple[Drug, ...] = ()
    lab_shift: tuple[tuple[str, float], ...] = ()
    min_age: int = 0


CHRONIC: tuple[tuple[Diagnosis, float], ...] = (  # with prevalence among adults over 40
    (Diagnosis("I10", "Essential (primary) hypertension", "原发性高血压", True, (
        Drug("C08CA01", "amlodipine", "苯磺酸氨氯地平片 5mg", 5, "mg", 1, ORAL),
        Drug("C09CA01", "losartan", "氯沙坦钾片 50mg", 50, "mg", 1, ORAL)),
        (("8480-6", 26), ("8462-4", 13)), 30), 0.35),
    (Diagnosis("E11.9", "Type 2 diabetes mellitus without complications", "2型糖尿病", True, (
        Drug("A10BA02", "metformin", "盐酸二甲双胍片 0.5g", 500, "mg", 3, ORAL),),
        (("14749-6", 2.9), ("4548-4", 1.9)), 30), 0.14),
    (Diagnosis("E78.5", "Hyperlipidemia, unspecified", "高脂血症", True, (
        Drug("C10AA05", "atorvastatin", "阿托伐他汀钙片 20mg", 20, "mg", 1, ORAL),),
        (("14647-2", 1.5), ("22748-8", 1.2), ("14927-8", 0.9)), 30), 0.2),
    (Diagnosis("I25.10", "Atherosclerotic heart disease of native coronary artery without "
               "angina pectoris", "冠状动脉粥样硬化性心脏病", True, (
        Drug("B01AC06", "acetylsalicylic acid", "阿司匹林肠溶片 100mg", 100, "mg", 1, ORAL),),
        (), 45), 0.08),
    (Diagnosis("J45.909", "Unspecified asthma, uncomplicated", "支气管哮喘", True, (
        Drug("R03AK06", "salmeterol and fluticasone", "沙美特罗替卡松吸入粉雾剂 50/250µg",
             1, "{puff}", 2, INHALED),), (), 0), 0.05),
    (Diagnosis("J44.9", "Chronic obstructive pulmonary disease, unspecified",
               "慢性阻塞性肺疾病", True, (
        Drug("R03BB04", "tiotropium bromide", "噻托溴铵粉吸入剂 18µg", 18, "ug", 1, INHALED),),
        (("59408-5", -3),), 50), 0.06),
    (Diagnosis("K21.9", "Gastro-esophageal reflux disease without esophagitis", "胃食管反流病",
               True, (Drug("A02BC01", "omeprazole", "奥美拉唑肠溶胶囊 20mg", 20, "mg", 1, ORAL),),
               (), 18), 0.06),
    (Diagnosis("N18.9", "Chronic kidney disease, unspecified", "慢性肾脏病", True, (),
               (("14682-9", 70), ("22664-7", 4)), 40), 0.04),
    (Diagnosis("E03.9", "Hypothyroidism, unspecified", "甲状腺功能减退症", True, (
        Drug("H03AA01", "levothyroxine sodium", "左甲状腺素钠片 50µg", 50, "ug", 1, ORAL),),
        (), 18), 0.04),
    (Diagnosis("M17.9", "Osteoarthritis of knee, unspecified", "膝关节骨关节炎", True, (
        Drug("M01AH01", "celecoxib", "塞来昔布胶囊 0.2g", 200, "mg", 1, ORAL),), (), 45), 0.08),
    (Diagnosis("F32.9", "Major depressive disorder, single episode, unspecified", "抑郁发作",
               True, (Drug("N06AB06", "sertraline", "盐酸舍曲林片 50mg", 50, "mg", 1, ORAL),),
               (), 15), 0.03),
)

ACUTE: tuple[Diagnosis, ...] = (
    Diagnosis("J06.9", "Acute upper respiratory infection, unspecified", "急性上呼吸道感染",
              False, (Drug("N02BE01", "paracetamol", "对乙酰氨基酚片 0.5g", 500, "mg", 0, ORAL),),
              (("8310-5", 1.2), ("6690-2", 2.5))),
    Diagnosis("J18.9", "Pneumonia, unspecified organism", "肺炎", False, (
        Drug("J01DD04", "ceftriaxone", "注射用头孢曲松钠 1g", 2, "g", 1, IV),),
        (("8310-5", 1.6), ("6690-2", 6), ("59408-5", -4))),
    Diagnosis("A09", "Infectious gastroenteritis and colitis, unspecified", "感染性胃肠炎", False,
              (Drug("A07CA", "oral rehydration salt formulations", "口服补液盐散(III)",
                    250, "mL", 3, ORAL),), (("6690-2", 3),)),
    Diagnosis("N39.0", "Urinary tract infection, site not specified", "泌尿道感染", False, (
        Drug("J01MA12", "levofloxacin", "左氧氟沙星片 0.5g", 500, "mg", 1, ORAL),),
        (("6690-2", 3),)),
    Diagnosis("R07.9", "Chest pain, unspecified", "胸痛", False, (), ()),
    Diagnosis("K35.80", "Unspecified acute appendicitis", "急性阑尾炎", False, (
        Drug("J01DD04", "ceftriaxone", "注射用头孢曲松钠 1g", 2, "g", 1, IV),),
        (("6690-2", 7), ("8310-5", 1.0))),
)

# (SNOMED code, display, Chinese text, category, criticality)
ALLERGENS = (
    ("764146007", "Penicillin", "青霉素", "medication", "high"),
    ("387406002", "Sulfonamide", "磺胺类药物", "medication", "low"),
    ("256349002", "Peanut", "花生", "food", "high"),
    ("102263004", "Eggs", "鸡蛋", "food", "low"),
    ("256277009", "Grass pollen", "花粉", "environment", "low"),
    ("111088007", "Latex", "乳胶", "environment", "low"),
)
REACTIONS = (
    ("271807003", "Eruption of skin", "皮疹"),
    ("126485001", "Urticaria", "荨麻疹"),
    ("267036007", "Dyspnea", "呼吸困难"),
    ("39579001", "Anaphylaxis", "过敏性休克"),
)
# (SNOMED code, display, Chinese text, ICD-10 codes it is done for: empty = any)
PROCEDURES = (
    ("29303009", "Electrocardiographic procedure", "十二导联心电图", ("I10", "I25.10", "R07.9")),
    ("40701008", "Echocardiography", "超声心动图", ("I10", "I25.10")),
    ("415070008", "Percutaneous coronary intervention", "经皮冠状动脉介入治疗", ("I25.10",)),
    ("80146002", "Appendectomy", "腹腔镜阑尾切除术", ("K35.80",)),
    ("73761001", "Colonoscopy", "结肠镜检查", ()),
    ("76009000", "Esophagogastroduodenoscopy", "胃镜检查", ("K21.9",)),
    ("169069000", "Computed tomography of chest", "胸部CT平扫", ("J18.9", "J44.9")),
)
# (CVX code, display, Chinese text)
VACCINES = (
    ("88", "influenza virus vaccine, unspecified formulation", "流感疫苗"),
    ("45", "hepatitis B vaccine, unspecified formulation", "乙型肝炎疫苗"),
    ("213", "SARS-COV-2 (COVID-19) vaccine, UNSPECIFIED FORMULATION", "新冠病毒疫苗"),
    ("33", "pneumococcal polysaccharide vaccine, 23 valent", "23价肺炎球菌多糖疫苗"),
)
# Encounter class -> (display, Chinese departments seen under it)
ENCOUNTER_CLASSES = {
    "AMB": ("ambulatory", ("心血管内科门诊", "内分泌科门诊", "呼吸内科门诊", "消化内科门诊",
                           "全科门诊", "骨科门诊")),
    "EMER": ("emergency", ("急诊内科", "急诊外科")),
    "IMP": ("inpatient encounter", ("心血管内科病区", "呼吸内科病区", "普通外科病区")),
}
