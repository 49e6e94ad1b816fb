"""LANGUAGES: the language codes the offline detector (engine/data/stages/language.py) knows.

Here, in the config layer, so that `refine.quality.languages` is checked without importing the
refine stages; the detector imports the set from this module.
"""

from __future__ import annotations

# Every code the model can return (besides "zxx", no linguistic content); "nb" is accepted
# in configs as Norwegian Bokmål (the model says "no").
LANGUAGES: frozenset[str] = frozenset("""
    af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr fy ga gd gl gu ha he
    hi hr ht hu hy id ig is it ja jv ka kk km kn ko ku ky la lg ln lo lt lv mg mk ml mn mr ms my
    ne nl no om or pa pl ps pt qu ro ru sa si sk sl so sq sr sv sw ta te th tl tr ug uk ur uz vi
    xh yo zh zu ace bcl dz ext gcf gom grc gug hbo kik nso pcm rw se sn st an ary crh fo fuv gcr
    guw kab lb lij ltg uzs wa sdh arz ba mt nn oc tg tk tt vec vo wuu yue
    nb""".split())
