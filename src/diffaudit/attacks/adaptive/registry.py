"""Every adaptive probe by name; `adaptive.probes` picks and orders them."""

from diffaudit.attacks.adaptive.base import Probe
from diffaudit.attacks.adaptive.embedding_search import EmbeddingSearchProbe
from diffaudit.attacks.adaptive.paraphrase import Paraphrase
from diffaudit.attacks.adaptive.weights_holder import WeightsHolder
from diffaudit.registry import Registry

# The probe with a negative control: it optimises toward a picture, so it can make a 'copy' up
# (`study.adaptive_audit.search_negative_control` runs it on never-trained captions; findings mark its cells when that
# control failed).
CONTROLLED = EmbeddingSearchProbe.name

PROBES: Registry[Probe] = Registry("adaptive probe", "adaptive.probes",
                                  {p.name: p for p in (WeightsHolder(), Paraphrase(), EmbeddingSearchProbe())})
