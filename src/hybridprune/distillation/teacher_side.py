"""The teacher's side of a step: where the teacher runs (the student's device, another device, or
spread by a device map over GPUs, CPU and disk), its final hidden states brought to the student's
device, and its targets: full logits through its head (the default), or top-k logits computed
online or read from a cache (`teacher_logits.py`)."""

from __future__ import annotations

import torch

from .config import DistillError
from .loss import Head
from .models import final_hidden, head_of


def input_device(model) -> torch.device:
    """Where a model's input ids go: its input embeddings' device (CPU when accelerate offloaded them)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dev = emb.weight.device if emb is not None else next(model.parameters()).device
    return torch.device("cpu") if dev.type == "meta" else dev


class TeacherMixin:
    """Teacher placement and targets of `Distiller`, which holds the attributes they use."""

    def _place_teacher(self) -> None:
        """Leave a teacher placed by a device map where it is; else move it to `teacher_device` (or the
        student's device)."""
        teacher, cfg = self.teacher, self.cfg
        spread = getattr(teacher, "hf_device_map", None)
        if spread and len(set(map(str, spread.values()))) > 1 or spread and cfg.teacher_device is None:
            self.placed = "device map"
        else:
            teacher.to(cfg.teacher_device or self.device)
            self.placed = str(cfg.teacher_device or self.device)
        self._t_head: Head | None = None

    @torch.no_grad()
    def teacher_hidden(self, ids, mask) -> torch.Tensor:
        dev = input_device(self.teacher)
        with self._autocast():
            h = final_hidden(self.teacher, ids.to(dev), None if mask is None else mask.to(dev))
        return h.to(self.device)

    def _teacher_head(self) -> Head:
        """The teacher's head on the student's device (a frozen copy when the teacher runs elsewhere)."""
        if self._t_head is None:
            head = head_of(self.teacher)
            if head.weight.device.type == "meta":
                raise DistillError("the teacher's LM head was offloaded to disk by the device map; the loss needs it "
                                   "in memory: give the teacher more GPU or CPU memory")
            if head.weight.device != self.device and self.mode != "fsdp":
                head = Head(head.weight.detach().to(self.device),
                            None if head.bias is None else head.bias.detach().to(self.device), head.scale)
            if self.mode == "fsdp":
                return head
            self._t_head = head
        return self._t_head

    def _teacher_topk(self, ids, mask, rows):
        """`(ids, log p, log p_tail)` `[B, T, k]` of this micro-batch: from the cache when the samples are the
        training data's (`rows`), else computed from the teacher now."""
        from .topk import teacher_topk

        if self.teacher_logits is not None and rows is not None:
            return tuple(t.to(self.device) for t in self.teacher_logits.lookup(rows))
        th = self.teacher_hidden(ids, mask)
        b, t = ids.shape
        top, logp, tail = teacher_topk(th.reshape(b * t, -1), self._teacher_head(), self.topk_k,
                                       chunk=self.cfg.chunk_size)
        return top.view(b, t, -1), logp.view(b, t, -1), tail.view(b, t)
