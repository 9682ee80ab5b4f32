"""`diffaudit report verdicts RUN`: the fixes' verdicts as a Markdown page (for README tables and docs/results), read
from the study's findings.json: per arm, sampler and seed the owner's and outsider's counts with intervals, the
copy test's own null at each setting, and the one verdict. Nothing here decides; it renders."""

from pathlib import Path

from diffaudit.io import write_text
from diffaudit.study.audit_records import Interval
from diffaudit.study.findings_record import CellCounts
from diffaudit.study.records import StudyResults


def _ci(pair: Interval | list[float | None]) -> str:
    low, high = pair
    return "–" if low is None or high is None else f"{100 * low:.0f}–{100 * high:.0f}%"


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}"


def _cell(c: CellCounts) -> str:
    return (f"{c.owner_pictures}/{c.pictures} pictures, {c.owner_prompts}/{c.prompts} captions "
            f"({_ci(c.owner_cluster_ci)}); outsider {c.outsider_prompts}/{c.prompts} "
            f"({_ci(c.outsider_cluster_ci)})" + (f"; near misses only: {c.miss_captions} caption(s)"
                                                     if c.miss_captions else ""))


def verdicts_markdown(res: StudyResults) -> str:
    f = res.findings
    cells = f.cells
    samplers = list(dict.fromkeys(c.sampler for c in cells if c.arm == "base"))
    seeds = sorted({c.seed for c in cells})
    first = seeds[0] if seeds else 0
    lines = [f"Run `{res.run.name}` (preset {res.preset}, base model {res.base_model[:8]}). "
             "Owner's check: every generation against its caption's own training picture; intervals are 95% cluster "
             "bootstraps over pictures. Outsider: the clique-filtered probe.", "",
             f"| arm | {' | '.join(f'{s} (seed {first})' for s in samplers)} | verdict |",
             "|---|" + "---|" * len(samplers) + "---|"]
    effects = {e.arm: e for e in res.effects()}
    for arm in dict.fromkeys(c.arm for c in cells):
        row = [next((_cell(c) for c in cells if c.arm == arm and c.sampler == s and c.seed == first), "–")
               for s in samplers]
        e = effects.get(arm)
        verdict = "(no fix)" if e is None else e.verdict + (
            f"; newly copies {', '.join(p.rsplit(' (', 1)[0] for p in e.started_pictures)}"
            if e.started_pictures else "")
        lines.append(f"| {arm} | {' | '.join(row)} | {verdict} |")
    if len(seeds) > 1:
        lines += ["", f"Training seeds, headline sampler {samplers[0] if samplers else ''}:", "",
                  "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | pooled owner's rate (95%) | min–max |",
                  "|---|" + "---|" * len(seeds) + "---|---|"]
        for p in f.arms:  # the pooled table's rows
            per_seed = [next((_cell(c) for c in cells if c.arm == p.arm and c.seed == s and c.sampler ==
                              samplers[0]), "–") for s in seeds]
            lines.append(f"| {p.arm} | {' | '.join(per_seed)} | {100 * p.owner_rate:.0f}% ({_ci(p.owner_ci)}) | "
                         f"{100 * p.owner_seed_min:.0f}–{100 * p.owner_seed_max:.0f}% |")
    nulls = f.setting_nulls
    if nulls:
        lines += ["", "Copy test per setting (never-trained captions that 'copy' their own unseen picture at the "
                  "calibrated delta):", "", "| setting | null | 95% upper bound | valid |", "|---|---|---|---|"]
        lines += [f"| {tag} | {n.hits}/{n.n} | {100 * n.ci_high:.1f}% | {'yes' if n.valid else 'no'} |"
                  for tag, n in nulls.items()]
    switched = f.switch_sampler
    if switched:
        lines += ["", "Switch the sampler (an attacker with the weights draws a setting-only fix another way):", "",
                  "| arm | sampler | stopped | started | p (exact McNemar) | verdict |", "|---|---|---|---|---|---|"]
        lines += [f"| {c.arm} | {c.sampler} | {c.stopped} | {c.started} | "
                  f"{_p(c.p_value)} | {c.verdict} |" for c in switched]
    lines += ["", "Ranking (the one the memo, reports and viewer read): "
              + (", ".join(f.ranking) or "no fix held") + "."]
    return "\n".join(lines) + "\n"


def write_verdicts(run: Path, out: Path | None = None) -> Path:
    res = StudyResults.load(run)
    out = Path(out or Path(run) / "verdicts.md")
    write_text(out, verdicts_markdown(res))
    return out
