"""USPS Publication 28 street suffixes (Appendix C1) and secondary unit designators (Appendix C2).

Data only, for the PII benchmark corpus (scripts/pii_corpus.py), which writes one US street
address per C1 row at least. C1 rows are (primary street suffix name, Postal Service standard
suffix abbreviation), in the order of the publication; the commonly used alternate spellings of
the appendix are not listed (ANEX → "Annex" is the one exception the corpus writes, in
COMMON_SPELLINGS, because that spelling is what people type). C2 rows are (designator,
abbreviation, whether a range — a number or letter — must follow it); "#" is the pound sign the
publication allows in place of a designator that requires a range.
"""

from __future__ import annotations

# Appendix C1 — Street Suffix Abbreviations: (primary street suffix name, standard abbreviation).
C1_STREET_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("ALLEY", "ALY"), ("ANEX", "ANX"), ("ARCADE", "ARC"), ("AVENUE", "AVE"),
    ("BAYOU", "BYU"), ("BEACH", "BCH"), ("BEND", "BND"), ("BLUFF", "BLF"),
    ("BLUFFS", "BLFS"), ("BOTTOM", "BTM"), ("BOULEVARD", "BLVD"), ("BRANCH", "BR"),
    ("BRIDGE", "BRG"), ("BROOK", "BRK"), ("BROOKS", "BRKS"), ("BURG", "BG"),
    ("BURGS", "BGS"), ("BYPASS", "BYP"), ("CAMP", "CP"), ("CANYON", "CYN"),
    ("CAPE", "CPE"), ("CAUSEWAY", "CSWY"), ("CENTER", "CTR"), ("CENTERS", "CTRS"),
    ("CIRCLE", "CIR"), ("CIRCLES", "CIRS"), ("CLIFF", "CLF"), ("CLIFFS", "CLFS"),
    ("CLUB", "CLB"), ("COMMON", "CMN"), ("COMMONS", "CMNS"), ("CORNER", "COR"),
    ("CORNERS", "CORS"), ("COURSE", "CRSE"), ("COURT", "CT"), ("COURTS", "CTS"),
    ("COVE", "CV"), ("COVES", "CVS"), ("CREEK", "CRK"), ("CRESCENT", "CRES"),
    ("CREST", "CRST"), ("CROSSING", "XING"), ("CROSSROAD", "XRD"), ("CROSSROADS", "XRDS"),
    ("CURVE", "CURV"), ("DALE", "DL"), ("DAM", "DM"), ("DIVIDE", "DV"),
    ("DRIVE", "DR"), ("DRIVES", "DRS"), ("ESTATE", "EST"), ("ESTATES", "ESTS"),
    ("EXPRESSWAY", "EXPY"), ("EXTENSION", "EXT"), ("EXTENSIONS", "EXTS"), ("FALL", "FALL"),
    ("FALLS", "FLS"), ("FERRY", "FRY"), ("FIELD", "FLD"), ("FIELDS", "FLDS"),
    ("FLAT", "FLT"), ("FLATS", "FLTS"), ("FORD", "FRD"), ("FORDS", "FRDS"),
    ("FOREST", "FRST"), ("FORGE", "FRG"), ("FORGES", "FRGS"), ("FORK", "FRK"),
    ("FORKS", "FRKS"), ("FORT", "FT"), ("FREEWAY", "FWY"), ("GARDEN", "GDN"),
    ("GARDENS", "GDNS"), ("GATEWAY", "GTWY"), ("GLEN", "GLN"), ("GLENS", "GLNS"),
    ("GREEN", "GRN"), ("GREENS", "GRNS"), ("GROVE", "GRV"), ("GROVES", "GRVS"),
    ("HARBOR", "HBR"), ("HARBORS", "HBRS"), ("HAVEN", "HVN"), ("HEIGHTS", "HTS"),
    ("HIGHWAY", "HWY"), ("HILL", "HL"), ("HILLS", "HLS"), ("HOLLOW", "HOLW"),
    ("INLET", "INLT"), ("ISLAND", "IS"), ("ISLANDS", "ISS"), ("ISLE", "ISLE"),
    ("JUNCTION", "JCT"), ("JUNCTIONS", "JCTS"), ("KEY", "KY"), ("KEYS", "KYS"),
    ("KNOLL", "KNL"), ("KNOLLS", "KNLS"), ("LAKE", "LK"), ("LAKES", "LKS"),
    ("LAND", "LAND"), ("LANDING", "LNDG"), ("LANE", "LN"), ("LIGHT", "LGT"),
    ("LIGHTS", "LGTS"), ("LOAF", "LF"), ("LOCK", "LCK"), ("LOCKS", "LCKS"),
    ("LODGE", "LDG"), ("LOOP", "LOOP"), ("MALL", "MALL"), ("MANOR", "MNR"),
    ("MANORS", "MNRS"), ("MEADOW", "MDW"), ("MEADOWS", "MDWS"), ("MEWS", "MEWS"),
    ("MILL", "ML"), ("MILLS", "MLS"), ("MISSION", "MSN"), ("MOTORWAY", "MTWY"),
    ("MOUNT", "MT"), ("MOUNTAIN", "MTN"), ("MOUNTAINS", "MTNS"), ("NECK", "NCK"),
    ("ORCHARD", "ORCH"), ("OVAL", "OVAL"), ("OVERPASS", "OPAS"), ("PARK", "PARK"),
    ("PARKS", "PARK"), ("PARKWAY", "PKWY"), ("PARKWAYS", "PKWY"), ("PASS", "PASS"),
    ("PASSAGE", "PSGE"), ("PATH", "PATH"), ("PIKE", "PIKE"), ("PINE", "PNE"),
    ("PINES", "PNES"), ("PLACE", "PL"), ("PLAIN", "PLN"), ("PLAINS", "PLNS"),
    ("PLAZA", "PLZ"), ("POINT", "PT"), ("POINTS", "PTS"), ("PORT", "PRT"),
    ("PORTS", "PRTS"), ("PRAIRIE", "PR"), ("RADIAL", "RADL"), ("RAMP", "RAMP"),
    ("RANCH", "RNCH"), ("RAPID", "RPD"), ("RAPIDS", "RPDS"), ("REST", "RST"),
    ("RIDGE", "RDG"), ("RIDGES", "RDGS"), ("RIVER", "RIV"), ("ROAD", "RD"),
    ("ROADS", "RDS"), ("ROUTE", "RTE"), ("ROW", "ROW"), ("RUE", "RUE"),
    ("RUN", "RUN"), ("SHOAL", "SHL"), ("SHOALS", "SHLS"), ("SHORE", "SHR"),
    ("SHORES", "SHRS"), ("SKYWAY", "SKWY"), ("SPRING", "SPG"), ("SPRINGS", "SPGS"),
    ("SPUR", "SPUR"), ("SPURS", "SPUR"), ("SQUARE", "SQ"), ("SQUARES", "SQS"),
    ("STATION", "STA"), ("STRAVENUE", "STRA"), ("STREAM", "STRM"), ("STREET", "ST"),
    ("STREETS", "STS"), ("SUMMIT", "SMT"), ("TERRACE", "TER"), ("THROUGHWAY", "TRWY"),
    ("TRACE", "TRCE"), ("TRACK", "TRAK"), ("TRAFFICWAY", "TRFY"), ("TRAIL", "TRL"),
    ("TRAILER", "TRLR"), ("TUNNEL", "TUNL"), ("TURNPIKE", "TPKE"), ("UNDERPASS", "UPAS"),
    ("UNION", "UN"), ("UNIONS", "UNS"), ("VALLEY", "VLY"), ("VALLEYS", "VLYS"),
    ("VIADUCT", "VIA"), ("VIEW", "VW"), ("VIEWS", "VWS"), ("VILLAGE", "VLG"),
    ("VILLAGES", "VLGS"), ("VILLE", "VL"), ("VISTA", "VIS"), ("WALK", "WALK"),
    ("WALKS", "WALK"), ("WALL", "WALL"), ("WAY", "WAY"), ("WAYS", "WAYS"),
    ("WELL", "WL"), ("WELLS", "WLS"),
)

# The spelling people type where it differs from the C1 primary name.
COMMON_SPELLINGS: dict[str, str] = {"ANEX": "ANNEX"}

# Appendix C2 — Secondary Unit Designators: (designator, abbreviation, range required).
C2_SECONDARY_UNITS: tuple[tuple[str, str, bool], ...] = (
    ("APARTMENT", "APT", True), ("BASEMENT", "BSMT", False), ("BUILDING", "BLDG", True),
    ("DEPARTMENT", "DEPT", True), ("FLOOR", "FL", True), ("FRONT", "FRNT", False),
    ("HANGAR", "HNGR", True), ("KEY", "KEY", True), ("LOBBY", "LBBY", False),
    ("LOT", "LOT", True), ("LOWER", "LOWR", False), ("OFFICE", "OFC", False),
    ("PENTHOUSE", "PH", False), ("PIER", "PIER", True), ("REAR", "REAR", False),
    ("ROOM", "RM", True), ("SIDE", "SIDE", False), ("SLIP", "SLIP", True),
    ("SPACE", "SPC", True), ("STOP", "STOP", True), ("SUITE", "STE", True),
    ("TRAILER", "TRLR", True), ("UNIT", "UNIT", True), ("UPPER", "UPPR", False),
)
POUND_SIGN = "#"  # may replace a designator that requires a range: "# 4", "#4B"
