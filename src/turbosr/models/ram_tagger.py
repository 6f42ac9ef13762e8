"""RAM's image tagging head (Zhang et al. 2023, "Recognize Anything", sec. 3: the image-tag recognition decoder)
and the per-image prompt that SeeSR and AddSR build from its tags, written here from the paper and the released
key layout (``label_embed``, ``wordvec_proj``, ``tagging_head.encoder.layer.*``, ``fc`` of
``ram_swin_large_14m.pth``).

The decoder is a stack of BERT layers in "tagging" mode: each class is one query, ``relu(wordvec_proj(label_embed))``;
every layer is cross-attention only (queries from the classes, keys and values from all image tokens, no mask)
with BERT's post-LayerNorm residual, then the GELU feed-forward, again post-LN; ``fc`` gives one logit per class.
A class is a tag when ``sigmoid(logit) > threshold[class]`` (RAM's per-class thresholds). The tags, in class
order and joined with ", ", fill the release's prompt template (``"{tags}, ," + added prompt``), which the
Stable Diffusion text encoder embeds per image (:class:`Tagger`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TAGGER_KEYS = ("num_classes", "hidden", "heads", "layers", "intermediate", "image_width", "eps")


class TaggingLayer(nn.Module):
    """One BERT layer in RAM's tagging mode: cross-attention + post-LN residual, GELU feed-forward + post-LN."""

    def __init__(self, hidden: int, heads: int, intermediate: int, image_width: int, eps: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"the tagging head's width {hidden} is not a multiple of its {heads} heads")
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden), nn.Linear(image_width, hidden),
                                            nn.Linear(image_width, hidden))
        self.attention_out, self.attention_norm = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=eps)
        self.up, self.down = nn.Linear(hidden, intermediate), nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, labels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        batch, count, hidden = labels.shape
        width = hidden // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.heads, width).transpose(1, 2)

        q, k, v = split(self.query(labels)), split(self.key(image)), split(self.value(image))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, count, hidden)
        h = self.attention_norm(self.attention_out(attended) + labels)
        return self.out_norm(self.down(F.gelu(self.up(h))) + h)


class RamTagger(nn.Module):
    """Image tokens (B, N, image_width) from the RAM tower -> one logit per class (B, num_classes); ``tagged``
    says which pass their thresholds."""

    def __init__(self, num_classes: int, hidden: int = 768, heads: int = 4, layers: int = 2,
                 intermediate: int = 3072, image_width: int = 512, eps: float = 1e-12) -> None:
        super().__init__()
        self.settings = {"num_classes": num_classes, "hidden": hidden, "heads": heads, "layers": layers,
                         "intermediate": intermediate, "image_width": image_width, "eps": eps}
        self.label_embed = nn.Parameter(torch.zeros(num_classes, image_width))
        self.wordvec_proj = nn.Linear(image_width, hidden)
        self.layers = nn.ModuleList(TaggingLayer(hidden, heads, intermediate, image_width, eps) for _ in range(layers))
        self.fc = nn.Linear(hidden, 1)
        self.register_buffer("thresholds", torch.ones(num_classes))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        labels = F.relu(self.wordvec_proj(self.label_embed.to(tokens.dtype)))
        labels = labels.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            labels = layer(labels, tokens)
        return self.fc(labels).squeeze(-1)

    def tagged(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) bool: sigmoid(logit) > the class's threshold (strict, float32)."""
        return torch.sigmoid(self.logits(tokens).float()) > self.thresholds.float()


# the release's key (under tagging_head.encoder.layer.{i}.) -> ours (under layers.{i}.)
RELEASE_LAYER_KEYS = {
    "crossattention.self.query": "query", "crossattention.self.key": "key", "crossattention.self.value": "value",
    "crossattention.output.dense": "attention_out", "crossattention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "up", "output.dense": "down", "output.LayerNorm": "out_norm",
}


def tagger_state(ram: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our RamTagger keys for the tagging part of a RAM state dict (thresholds not included: they are a file)."""
    state = {}
    for key, value in ram.items():
        if key.startswith(("label_embed", "wordvec_proj.", "fc.")):
            state[key] = value
        elif key.startswith("tagging_head.encoder.layer."):
            index, rest = key[len("tagging_head.encoder.layer."):].split(".", 1)
            module, _, leaf = rest.rpartition(".")
            if module not in RELEASE_LAYER_KEYS:
                raise ValueError(f"unknown tagging-head key {key}")
            state[f"layers.{index}.{RELEASE_LAYER_KEYS[module]}.{leaf}"] = value
    return state


TIED_PREFIXES = ("tagging_head.encoder.layer.", "tag_encoder.encoder.layer.")


def merge_tagging_lora(tagger: RamTagger, dape: dict[str, torch.Tensor], alpha: float = 1.0) -> int:
    """Merge DAPE's LoRA on the tagging head's query and key (loralib ``Linear``: W + alpha / r * B @ A).

    RAM ties the cross-attention of its tag encoder's first layers to the tagging head (one tensor under two
    names), so the reference's merge adds those layers' deltas to the head as well: they are merged here too
    (DAPE leaves them zero, as they lie outside its loss)."""
    merged = 0
    for key, a in dape.items():
        prefix = next((p for p in TIED_PREFIXES if key.startswith(p)), None)
        if prefix is None or not key.endswith(".lora_A"):
            continue
        index, rest = key[len(prefix):-len(".lora_A")].split(".", 1)
        if rest not in RELEASE_LAYER_KEYS:
            if prefix == TIED_PREFIXES[0]:
                raise ValueError(f"DAPE's {key} is on no tagging-head layer")
            continue  # the tag encoder's own self-attention: not tied to the head
        if int(index) >= len(tagger.layers):
            if prefix == TIED_PREFIXES[0]:
                raise ValueError(f"DAPE's {key} is on a layer the tagging head does not have")
            continue
        b = dape.get(key[: -len("lora_A")] + "lora_B")
        if b is None:
            raise ValueError(f"DAPE has {key} without its lora_B")
        layer = tagger.layers[int(index)].get_submodule(RELEASE_LAYER_KEYS[rest])
        assert isinstance(layer, nn.Linear)
        rank = a.shape[0]
        if a.shape != (rank, layer.in_features) or b.shape != (layer.out_features, rank):
            raise ValueError(f"DAPE's {key} ({tuple(a.shape)}, {tuple(b.shape)}) does not fit {tuple(layer.weight.shape)}")
        with torch.no_grad():
            delta = (b.double() @ a.double()) * (alpha / rank)
            layer.weight.copy_((layer.weight.double() + delta).to(layer.weight.dtype))
        merged += 1
    return merged


class Tagger(nn.Module):
    """RAM tags of an image -> the release's prompt with those tags -> text-encoder states (B, 77, dim).

    The tagging head is a parameter of the model folder; the text encoder and its tokenizer (the Stable Diffusion
    folder's, copied at import) are read from ``text_folder`` the first time a prompt is embedded, so a model
    used without tags never loads them."""

    def __init__(self, head: RamTagger, names: list[str], template: str, text_folder: Path | None = None) -> None:
        super().__init__()
        if len(names) != head.settings["num_classes"]:
            raise ValueError(f"{len(names)} tag names for {head.settings['num_classes']} classes")
        if "{tags}" not in template:
            raise ValueError(f"the prompt template must contain {{tags}}, got {template!r}")
        self.head, self.names, self.template, self.text_folder = head, list(names), template, text_folder
        self._text: tuple[Any, Any] | None = None

    def config(self) -> dict[str, Any]:
        return {**self.head.settings, "template": self.template, "names": self.names}

    def tags(self, tokens: torch.Tensor) -> list[str]:
        """One string per image: the names of its tags in class order, joined with ", " (RAM's generate_tag)."""
        tagged = self.head.tagged(tokens).cpu()
        return [", ".join(self.names[i] for i in row.nonzero().flatten().tolist()) for row in tagged]

    def prompt(self, tags: str) -> str:
        return self.template.replace("{tags}", tags)

    def text_model(self) -> tuple[Any, Any]:
        """(tokenizer, text encoder), loaded once from ``text_folder``."""
        if self._text is None:
            if self.text_folder is None:
                raise ValueError("this model has no text encoder for tag prompts")
            try:
                from transformers import CLIPTextModel, CLIPTokenizer
            except ImportError:
                raise ValueError("--tags embeds each prompt with the model's text encoder, which needs transformers: "
                                 "pip install 'turbosr[import]'") from None

            tokenizer = CLIPTokenizer.from_pretrained(self.text_folder / "tokenizer", local_files_only=True)
            encoder = CLIPTextModel.from_pretrained(self.text_folder / "text_encoder", local_files_only=True,
                                                    torch_dtype=torch.float32).eval()
            self._text = (tokenizer, encoder)
        return self._text

    def embed(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Text-encoder states of ``prompts`` (padded to the tokenizer's length, as the releases do)."""
        tokenizer, encoder = self.text_model()
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        encoder.to(device, dtype)
        with torch.no_grad():
            return encoder(ids.to(device)).last_hidden_state


def tagger_from_config(config: Any, folder: Path) -> Tagger:
    """The Tagger a model folder describes (config.json "tagger"), its head's weights not yet loaded."""
    if not isinstance(config, dict):
        raise ValueError(f"{folder}/config.json: 'tagger' must be a mapping")
    unknown = sorted(set(config) - {*TAGGER_KEYS, "template", "names"})
    if unknown:
        raise ValueError(f"{folder}/config.json: unknown tagger key(s) {', '.join(unknown)}")
    for key in TAGGER_KEYS[:-1]:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
            raise ValueError(f"{folder}/config.json: tagger.{key} {value!r} is not a plausible size")
    names = config.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{folder}/config.json: tagger.names must be a list of strings")
    head = RamTagger(**{k: config[k] for k in TAGGER_KEYS if k in config})
    return Tagger(head, names, str(config.get("template", "{tags}")), folder)
