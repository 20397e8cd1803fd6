"""Time-aware sequence model over a patient's irregular visits, and the forecast heads.

Each visit becomes one input vector (see :class:`SequenceModel`), a causal GRU or a causal
transformer runs over the visits in date order, and the state at a visit summarises
everything known up to that date. Heads read that state:

- current damage at the visit (SvdH total, erosion, JSN; log1p units), as the image
  reading (sum of region predictions), or for the total the last observed total where a
  reader scored one, plus a learned correction (growth since then, missing regions,
  unimaged visits);
- change over a continuous horizon ``h`` (years): ``scale * (softplus(a) h + softplus(b) h^2)``,
  non-negative and increasing in ``h`` by construction;
- ``P(change >= rapid_rate * h)`` (the cohort's scoring system's threshold, 5 SvdH units/yr) (a logit rising with the forecast rate, plus a learned
  correction) and a central interval (quantile heads, pinball loss) around the point forecast.

Time enters as continuous inputs (years since the first visit, years since the previous
visit), never as the visit index, so 3-monthly and 2-yearly schedules mean what they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from progression.data.horizons import MIN_RATE_GAP_YEARS, slope_defined
from progression.data.layout import InputLayout
from progression.models.change_head import ChangeHead
from progression.scoring import RAPID_RATE

N_REGIONS = 4
REGION_FEATURES = 9  # per region: 2 scores, present, 2 since-previous rates, mask, 2 since-first, mask
CHANGE_FEATURES = 2  # per region with model.change_head: read change since the previous film, its rate
TIME_SCALE_YEARS = 5.0  # keeps years-since-first-visit near unit scale
HISTORY_FEATURES = 5


def observed_history(obs_log: torch.Tensor, obs_mask: torch.Tensor, years: torch.Tensor,
                     rapid_rate: float = RAPID_RATE) -> torch.Tensor:
    """Per visit, from the observed totals up to and including it: ``[B, T, 5]``.

    Last observed total (log1p units) and whether one exists, the years since it, and the
    least-squares slope of the observed totals over time (units/year / ``rapid_rate``, 0
    unless :func:`~progression.data.horizons.slope_defined`) with its
    mask: the patient's own past rate, which reader-scored cohorts give directly.
    """
    kept = obs_mask[..., 0].float()
    y = torch.expm1(obs_log[..., 0].float()) * kept
    t = years.float() * kept
    b, n_visits = kept.shape
    position = torch.arange(n_visits, device=kept.device).expand(b, n_visits)
    last = torch.where(kept > 0, position, torch.full_like(position, -1)).cummax(dim=1).values
    seen = (last >= 0).float()
    last = last.clamp(min=0)
    last_log = obs_log[..., 0].float().gather(1, last) * seen
    since = (years - years.gather(1, last)).clamp(min=0) * seen / TIME_SCALE_YEARS
    n, st, sy = kept.cumsum(1), t.cumsum(1), y.cumsum(1)
    stt, sty = (t * t).cumsum(1), (t * y).cumsum(1)
    denom = n * stt - st * st
    spread = slope_defined(n, denom)
    slope = torch.where(spread, (n * sty - st * sy) / denom.clamp(min=1e-6), torch.zeros_like(denom))
    slope = (slope / rapid_rate).clamp(-5.0, 5.0)
    return torch.stack([last_log, seen, since, slope, spread.float()], dim=-1)


def _mlp(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
    )


class SequenceModel(nn.Module):
    """Per-visit inputs -> causal state -> current damage, and pair heads at horizons.

    ``image_dim`` is the embedding size of the image encoder (0 = no images: covariates
    and observed scores only); ``image_feature_dim`` of it is kept after a dropout-regularised
    projection (fed full embeddings, the sequence model memorised patients; see
    docs/design_decisions.md#a-small-sequence-model-over-image-derived-scores).
    """

    def __init__(
        self,
        layout: InputLayout,
        image_dim: int,
        image_feature_dim: int = 4,
        embedding_dropout: float = 0.5,
        hidden: int = 64,
        layers: int = 1,
        kind: str = "gru",
        dropout: float = 0.1,
        cat_embed_dim: int = 4,
        interval_level: float = 0.9,
        rapid_rate: float = RAPID_RATE,
        change_head: bool = False,
    ) -> None:
        super().__init__()
        # Rapid progression in the cohort's units/year (its scoring system); not a weight.
        self.rapid_rate = float(rapid_rate)
        if kind not in ("gru", "transformer"):
            raise ValueError(f"seq_model must be 'gru' or 'transformer', got {kind!r}")
        self.layout = layout
        self.kind = kind
        self.interval_level = interval_level
        self.image_dim = image_dim
        self.image_feature_dim = image_feature_dim if image_dim else 0
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.image_proj = (
            nn.Linear(image_dim, self.image_feature_dim) if self.image_feature_dim else None
        )
        # model.change_head: the change read between a region's film and its previous film.
        self.change_head = ChangeHead(image_dim, N_REGIONS) if change_head and image_dim else None
        self.region_features = REGION_FEATURES + (CHANGE_FEATURES if self.change_head else 0)
        self.static_cat = nn.ModuleList(nn.Embedding(n, cat_embed_dim) for n in layout.static_cat_sizes)
        self.visit_cat = nn.ModuleList(nn.Embedding(n, cat_embed_dim) for n in layout.visit_cat_sizes)
        n_in = (
            N_REGIONS * self.region_features
            + 3  # log1p of the imaged total, erosion, JSN
            + 1  # fraction of regions imaged
            + self.image_feature_dim
            + 2  # years since first visit, years since previous visit
            + 6  # observed total/erosion/JSN (log1p) + their masks
            + HISTORY_FEATURES  # last observed total, its age, slope of observed totals
            + 2 * layout.n_visit_num
            + cat_embed_dim * len(layout.visit_cat_sizes)
            + 2 * layout.n_static_num
            + cat_embed_dim * len(layout.static_cat_sizes)
        )
        self.n_inputs = n_in
        self.input = nn.Sequential(nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
        if kind == "gru":
            self.rnn = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True,
                              dropout=dropout if layers > 1 else 0.0)
        else:
            self.time_freq = nn.Parameter(torch.linspace(0.0, 3.0, hidden // 4).exp2() * math.pi / 8)
            self.time_proj = nn.Linear(2 * (hidden // 4), hidden)
            block = nn.TransformerEncoderLayer(hidden, nhead=4 if hidden % 4 == 0 else 1,
                                               dim_feedforward=2 * hidden, dropout=dropout,
                                               batch_first=True, norm_first=True)
            self.rnn = nn.TransformerEncoder(block, num_layers=layers, enable_nested_tensor=False)
        self.current_head = _mlp(hidden, hidden, 3, dropout)
        nn.init.zeros_(self.current_head[-1].weight)
        nn.init.zeros_(self.current_head[-1].bias)
        self.rate_head = _mlp(hidden, hidden, 2, dropout)
        self.pair_head = _mlp(hidden + 1, hidden, 3, dropout)  # rapid logit, lower/upper width
        nn.init.zeros_(self.pair_head[-1].weight)
        nn.init.zeros_(self.pair_head[-1].bias)
        # P(rapid) rises with the forecast rate; the head above only corrects it.
        self.rapid_slope = nn.Parameter(torch.tensor(1.0))
        # SvdH units per year that one unit of the rate head means; set from training data.
        self.register_buffer("rate_scale", torch.tensor(1.0))

    # ---- per-visit inputs -------------------------------------------------------------------
    def _region_block(
        self, feats: torch.Tensor | None, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Region features [B,T,R*F], imaged log totals [B,T,3], fraction imaged, embeddings."""
        idx = batch["image_index"]
        b, t, r = idx.shape
        present = idx >= 0
        if feats is None or feats.numel() == 0 or self.image_dim == 0:
            zeros = idx.new_zeros((b, t, r * self.region_features), dtype=torch.float32)
            emb = idx.new_zeros((b, t, self.image_feature_dim), dtype=torch.float32)
            return zeros, zeros.new_zeros((b, t, 3)), zeros.new_zeros((b, t, 1)), emb

        def scores(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ok = index >= 0
            log = feats[index.clamp(min=0), :2].float().clamp(min=0) * ok.unsqueeze(-1)
            return log, ok

        cur_log, _ = scores(idx)
        cur_units = torch.expm1(cur_log)
        parts = [cur_log, present.unsqueeze(-1).float()]
        for key in ("prev", "first"):
            other_log, ok = scores(batch[f"{key}_index"])
            gap = batch[f"{key}_gap"].clamp(min=MIN_RATE_GAP_YEARS).unsqueeze(-1)
            ok = ok & present
            rate = (cur_units - torch.expm1(other_log)) / gap / self.rapid_rate * ok.unsqueeze(-1)
            parts += [rate, ok.unsqueeze(-1).float()]
        if self.change_head is not None:
            # The read change is an input like the region readings: the forecast losses do
            # not train the head (only reader-scored pairs do, see film_changes).
            change = self.film_changes(feats, batch).detach().unsqueeze(-1)
            gap = batch["prev_gap"].clamp(min=MIN_RATE_GAP_YEARS).unsqueeze(-1)
            units = change * self.rate_scale / self.rapid_rate
            parts += [units, units / gap]
        block = torch.cat(parts, dim=-1).reshape(b, t, r * self.region_features)
        ero, jsn = cur_units[..., 0].sum(-1), cur_units[..., 1].sum(-1)
        imaged_log = torch.log1p(torch.stack([ero + jsn, ero, jsn], dim=-1))
        frac = present.float().mean(-1, keepdim=True)
        if self.image_proj is not None:
            emb = feats[idx.clamp(min=0), 2:].float()
            proj = self.image_proj(self.embedding_dropout(emb)) * present.unsqueeze(-1)
            pooled = proj.sum(2) / present.sum(2, keepdim=True).clamp(min=1)
        else:
            pooled = block.new_zeros((b, t, 0))
        return block, imaged_log, frac, pooled

    def film_changes(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Change read by :attr:`change_head` between each visit's film of a region and the
        region's previous film, ``[B, T, R]`` in rate-scale units (x ``rate_scale`` = SvdH
        units); 0 where either film is missing (a one-visit patient has no pair)."""
        idx, prev = batch["image_index"], batch["prev_index"]
        ok = (idx >= 0) & (prev >= 0)
        region = torch.arange(idx.shape[-1], device=idx.device).expand_as(idx)
        later = feats[idx[ok], 2:].float()
        earlier = feats[prev[ok], 2:].float()
        out = feats.new_zeros(idx.shape, dtype=torch.float32)
        if later.shape[0]:
            out[ok] = self.change_head(later, earlier, region[ok]).float()
        return out

    def visit_inputs(
        self, feats: torch.Tensor | None, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The input vector of every visit ``[B, T, n_inputs]`` and the damage to start the
        current-score head from (log1p total/erosion/JSN ``[B, T, 3]``): the image reading,
        with the total replaced by the last observed total where one exists."""
        block, imaged_log, frac, pooled = self._region_block(feats, batch)
        b, t = batch["visit_mask"].shape
        obs_mask = batch["obs_mask"].float()
        history = observed_history(batch["obs_log"], batch["obs_mask"], batch["years"],
                                   self.rapid_rate)
        parts = [
            block, imaged_log, frac, pooled,
            (batch["years"] / TIME_SCALE_YEARS).unsqueeze(-1),
            batch["gap"].clamp(max=TIME_SCALE_YEARS).unsqueeze(-1),
            batch["obs_log"] * obs_mask, obs_mask,
            history,
            batch["visit_num"] * batch["visit_num_mask"], batch["visit_num_mask"],
        ]
        parts += [emb(batch["visit_cat"][..., k]) for k, emb in enumerate(self.visit_cat)]
        static = [batch["static_num"] * batch["static_num_mask"], batch["static_num_mask"]]
        static += [emb(batch["static_cat"][:, k]) for k, emb in enumerate(self.static_cat)]
        parts += [s.unsqueeze(1).expand(b, t, s.shape[-1]) for s in static]
        x = torch.cat([p.float() for p in parts], dim=-1)
        seen = history[..., 1:2] > 0
        base_total = torch.where(seen, history[..., :1], imaged_log[..., :1])
        base = torch.cat([base_total, imaged_log[..., 1:]], dim=-1)
        return x * batch["visit_mask"].unsqueeze(-1), base

    # ---- forward ----------------------------------------------------------------------------
    def forward(
        self, feats: torch.Tensor | None, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Causal state ``[B, T, H]`` at every visit and current damage ``log1p`` ``[B, T, 3]``.

        ``feats`` is the per-image feature table ``[n_images, 2 + embed_dim]`` (region
        log-scores then embedding) that ``batch['image_index']`` points into.
        """
        x, base = self.visit_inputs(feats, batch)
        h = self.input(x)
        if self.kind == "gru":
            state, _ = self.rnn(h)
        else:
            phase = batch["years"].unsqueeze(-1) * self.time_freq
            h = h + self.time_proj(torch.cat([phase.sin(), phase.cos()], dim=-1))
            t = h.shape[1]
            causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=h.device), diagonal=1)
            state = self.rnn(h, mask=causal, src_key_padding_mask=~batch["visit_mask"])
        current_log = base + self.current_head(state)
        return {"state": state, "current_log": current_log}

    def pair_outputs(self, state: torch.Tensor, horizon: torch.Tensor) -> dict[str, torch.Tensor]:
        """Heads at index states ``[P, H]`` and horizons ``[P]`` (years), in SvdH units.

        Returns ``delta`` (point forecast), ``lo``/``hi`` (interval), ``rapid_logit``.
        """
        h = horizon.float().unsqueeze(-1)
        ab = F.softplus(self.rate_head(state).float())
        delta = self.rate_scale * (ab[:, :1] * h + ab[:, 1:] * h * h)
        extra = self.pair_head(torch.cat([state, h / TIME_SCALE_YEARS], dim=-1)).float()
        width = self.rate_scale * F.softplus(extra[:, 1:]) * h.sqrt()
        point = delta.detach()  # the interval and P(rapid) must not drag the point forecast
        rate = point.squeeze(-1) / horizon.float().clamp(min=1e-3)
        rapid_logit = F.softplus(self.rapid_slope) * (rate - self.rapid_rate) / self.rate_scale
        return {
            "delta": delta.squeeze(-1),
            "lo": (point - width[:, :1]).squeeze(-1),
            "hi": (point + width[:, 1:]).squeeze(-1),
            "rapid_logit": rapid_logit + extra[:, 0],
        }
