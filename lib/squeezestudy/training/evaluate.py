"""Evaluation: loss and accuracy, predictions, per-class accuracy, confusion matrix, mistakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from squeezestudy.core.device import autocast
from squeezestudy.data.fashion_mnist import NUM_CLASSES, Batches


@torch.no_grad()
def predict(model: nn.Module, batches: Batches, precision: str = "fp32") -> torch.Tensor:
    """Logits (float32, on CPU) for every image of `batches`, in order."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for x, _ in batches:
            with autocast(batches.device, precision):
                out.append(model(x).float())
    finally:
        model.train(was_training)
    return torch.cat(out).cpu()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, precision: str = "fp32") -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy over `batches`."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=batches.device)
    correct = torch.zeros((), device=batches.device, dtype=torch.long)
    try:
        for x, y in batches:
            with autocast(batches.device, precision):
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    finally:
        model.train(was_training)
    n = len(batches.labels)
    return loss_sum.item() / n, correct.item() / n


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return (predictions == labels).float().mean().item()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor,
                     num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Counts [true class, predicted class]."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor,
                       num_classes: int = NUM_CLASSES) -> torch.Tensor:
    cm = confusion_matrix(predictions, labels, num_classes)
    return cm.diag().float() / cm.sum(1).clamp(min=1).float()


def misclassified(predictions: torch.Tensor, labels: torch.Tensor, confidence: torch.Tensor | None = None,
                  limit: int | None = None) -> torch.Tensor:
    """Indices of wrong predictions, in index order; with `confidence` (one value per image, e.g.
    the predicted class's probability), the most confident mistakes first."""
    wrong = torch.nonzero(predictions != labels).flatten()
    if confidence is not None:
        wrong = wrong[confidence[wrong].argsort(descending=True)]
    return wrong[:limit] if limit is not None else wrong
