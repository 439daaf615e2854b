"""Direct preference losses: each one a configurable, chosen by reference in gin.

    dpo_task.loss_fn = @sigmoid_dpo_loss()     # or @ipo_loss(), @dpo_norm_loss(), @simpo_loss()

A loss is called with the policy's and the reference's log-probabilities of each side's
response, summed over its tokens, and the token counts; it returns the per-pair loss and the
implicit rewards (chosen, rejected) that the metrics report. A parameter exists only on the loss
that uses it, so binding `gamma` with DPO, or a reference with SimPO, fails at config time.
"""

import dataclasses

import torch.nn.functional as F

from lib.config.registry import configurable


@dataclasses.dataclass(frozen=True)
class PreferenceLoss:
    """Shared by the losses below; `kind` selects the formula."""

    kind: str
    beta: float
    label_smoothing: float = 0.0
    gamma: float = 0.0

    @property
    def needs_reference(self) -> bool:
        return self.kind != "simpo"

    @property
    def length_normalized(self) -> bool:
        """Whether log-probabilities are averaged over each response's tokens first."""
        return self.kind in ("ipo", "dpo_norm", "simpo")

    def __call__(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                 len_chosen, len_rejected):
        """(per-pair loss [n], chosen implicit reward [n], rejected implicit reward [n])."""
        if self.length_normalized:
            policy_chosen = policy_chosen / len_chosen
            policy_rejected = policy_rejected / len_rejected
            if ref_chosen is not None:
                ref_chosen, ref_rejected = ref_chosen / len_chosen, ref_rejected / len_rejected
        if self.needs_reference:
            chosen = policy_chosen - ref_chosen
            rejected = policy_rejected - ref_rejected
        else:
            chosen, rejected = policy_chosen, policy_rejected
        delta = chosen - rejected
        if self.kind == "ipo":
            # Azar et al., 2023, eq. 17: (h - 1/(2 tau))^2 with tau = beta.
            loss = (delta - 1.0 / (2.0 * self.beta)) ** 2
        else:
            # Rafailov et al., 2023, eq. 7 (DPO); Tulu 3's dpo_norm on averaged log-probs;
            # Meng et al., 2024, eq. 6 (SimPO, margin gamma); conservative label smoothing
            # as in Mitchell, 2023 (cDPO).
            logits = self.beta * delta - self.gamma
            loss = (-(1.0 - self.label_smoothing) * F.logsigmoid(logits)
                    - self.label_smoothing * F.logsigmoid(-logits))
        return loss, (self.beta * chosen).detach(), (self.beta * rejected).detach()


def loss_problems(name, view, beta_arg="beta"):
    problems = []
    beta = view.get(name, beta_arg)
    if not beta > 0:
        problems.append((beta_arg, f"{beta_arg}={beta} must be > 0"))
    if "label_smoothing" in _PARAMS[name]:
        eps = view.get(name, "label_smoothing")
        if not 0.0 <= eps < 0.5:
            problems.append(("label_smoothing", f"label_smoothing={eps} must be in [0, 0.5) "
                             "(the probability that a preference label is flipped)"))
    if name == "simpo_loss" and not view.get(name, "gamma") >= 0:
        problems.append(("gamma", f"gamma={view.get(name, 'gamma')} must be >= 0"))
    return problems


_PARAMS = {"sigmoid_dpo_loss": ("beta", "label_smoothing"), "ipo_loss": ("beta",),
           "dpo_norm_loss": ("beta", "label_smoothing"),
           "simpo_loss": ("beta", "gamma", "label_smoothing")}


@configurable(check=lambda view: loss_problems("sigmoid_dpo_loss", view))
def sigmoid_dpo_loss(beta: float = 0.1, label_smoothing: float = 0.0) -> PreferenceLoss:
    """DPO (Rafailov et al., 2023): -log sigmoid(beta * (chosen log-ratio - rejected)).

    Args:
      beta: the KL weight; 0.1 is the paper's and TRL's default (Tulu 3 uses 5 with dpo_norm).
      label_smoothing: assumed probability that a label is flipped (cDPO), in [0, 0.5).
    """
    return PreferenceLoss("sigmoid", beta, label_smoothing)


@configurable(check=lambda view: loss_problems("ipo_loss", view))
def ipo_loss(beta: float = 0.1) -> PreferenceLoss:
    """IPO (Azar et al., 2023): (length-averaged log-ratio difference - 1/(2 beta))^2.

    Args:
      beta: the regularization tau of the paper (> 0); TRL's default 0.1. Log-probabilities
        are averaged over response tokens, as in TRL.
    """
    return PreferenceLoss("ipo", beta)


@configurable(check=lambda view: loss_problems("dpo_norm_loss", view))
def dpo_norm_loss(beta: float = 5.0, label_smoothing: float = 0.0) -> PreferenceLoss:
    """Length-normalized DPO (Tulu 3's `dpo_norm`): sigmoid DPO on per-token averages.

    Args:
      beta: 5 is Tulu 3's (its log-ratios are per token, so beta is much larger than DPO's).
      label_smoothing: assumed probability that a label is flipped, in [0, 0.5).
    """
    return PreferenceLoss("dpo_norm", beta, label_smoothing)


@configurable(check=lambda view: loss_problems("simpo_loss", view))
def simpo_loss(beta: float = 2.0, gamma: float = 1.0,
               label_smoothing: float = 0.0) -> PreferenceLoss:
    """SimPO (Meng et al., 2024): -log sigmoid(beta * (avg logp chosen - avg logp rejected)
    - gamma). Reference-free: no reference model or cache is built.

    Args:
      beta: the reward scale (the paper uses 2 to 2.5).
      gamma: the target reward margin (the paper's gamma/beta of 0.5 with beta 2).
      label_smoothing: assumed probability that a label is flipped, in [0, 0.5).
    """
    return PreferenceLoss("simpo", beta, label_smoothing, gamma)
