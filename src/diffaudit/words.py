"""The plain words a fix is described in (its title, what changed, who can undo it, where it lives): written by each
mitigation, stored in the study's records and rendered by the reports, so it sits below all of them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Description:
    """How a reader meets the arm: `title` names it ("Stronger guidance (scale 3)"), `what` says in one sentence
    what was changed, `undone_by` who can reverse it (empty when only retraining can), `lasts` where the fix lives:
    in the training `data`, in the `weights`, or in a sampling `setting` (the memo ranks fixes by it), and `note`
    what a reader must know before adopting it."""

    title: str
    what: str
    undone_by: str = ""
    lasts: str = "weights"
    note: str = ""
