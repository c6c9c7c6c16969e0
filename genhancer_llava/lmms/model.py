"""`--model genhancer_llava`: LLaVA checkpoints in lmms-eval: llava-hf LLaVA-1.5, LLaVA-NeXT and
LLaVA-OneVision, original-format LLaVA-1.5 and LLaVA-NeXT (the family is read from the
checkpoint's config.json, `genhancer_llava.mllm.checkpoints`).

    lmms-eval --model genhancer_llava \\
        --model_args pretrained=CKPT[,vision_tower=DIR][,dtype=bfloat16][,device_map=auto] \\
        --tasks mmvp,cv_bench,pope --batch_size 1 --log_samples --output_path runs/lmms

Model args: `pretrained` (checkpoint folder), `vision_tower` (encoder folder or
`genhancer[:NAME|:PATH]`, swapped in at load time, checked as `genhancer swap` does), `device`
(also lmms-eval's `--device`; default this process's GPU, else CPU), `dtype` ('auto': bf16 on
GPU, fp32 on CPU), `device_map` (default: the device), `conv_template` (original format;
default `vicuna_v1`), `attn_implementation` (llava-hf). Chat mode (default) and simple mode
(`--force_simple`) build the same prompt (the checkpoint's chat template or conversation
template): the images first, then the text; anyres tiling is the checkpoint's processor's.
Generation kwargs are cleaned before HF generate (`until` applied to the text afterwards).
One request at a time (`--batch_size 1`); data parallel over processes with
`accelerate launch -m lmms_eval ...` (one GPU per process).
"""

from __future__ import annotations

import os
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from ..errors import GenhancerError
from ..mllm.runner import clean_gen_kwargs, load_llava
from ..mllm.swap import PROJECTOR_NOTE

__all__ = ["GenhancerLlava", "GenhancerLlavaChat"]


def _flatten(visuals) -> list:
    out = []
    for item in visuals or []:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        elif item is not None:
            out.append(item)
    return out


class GenhancerLlava(lmms):
    """Simple mode: requests carry (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        vision_tower: str | None = None,
        device: str | None = None,
        dtype: str | None = "auto",
        device_map: str | None = None,
        conv_template: str = "vicuna_v1",
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise GenhancerError(
                f"genhancer_llava: unknown model_args {sorted(kwargs)}; known: "
                "pretrained, vision_tower, device, dtype, device_map, "
                "conv_template, attn_implementation"
            )
        if int(batch_size) != 1:
            raise GenhancerError("genhancer_llava runs one request at a time: --batch_size 1")
        self.runner = load_llava(
            pretrained,
            vision_tower=vision_tower or None,
            device=device,
            dtype=dtype,
            device_map=device_map or None,
            conv_template=conv_template,
            attn_implementation=attn_implementation,
        )
        self.pretrained = str(pretrained)
        self.chat_template = None  # lmms-eval logs it; prompts come from the runner
        self._rank = int(os.environ.get("RANK", 0))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        family = self.runner.family.name if self.runner.family else "?"
        logger.info(
            f"genhancer_llava: {self.runner.format} checkpoint {pretrained} ({family}) on "
            f"{self.runner.input_device} ({self.runner.dtype})"
            + (f", vision tower swapped to {vision_tower}" if vision_tower else "")
        )
        if vision_tower:  # lmms-eval silences Python warnings: say it through its logger
            logger.warning(f"genhancer_llava: {PROJECTOR_NOTE}")

    # lmms-eval reads these
    @property
    def batch_size(self) -> int:
        return 1

    @property
    def device(self):
        return self.runner.input_device

    @property
    def model(self):
        return self.runner.model

    @property
    def tokenizer(self):
        return self.runner.tokenizer

    def _doc(self, task: str, split: str, doc_id: int):
        return self.task_dict[task][split][doc_id]

    def _inputs(self, args: tuple) -> tuple[list, str, dict]:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = args
        images = _flatten(doc_to_visual(self._doc(task, split, doc_id)))
        return images, context.replace("<image>", "").strip(), gen_kwargs

    def _answer(self, images: list, text: str, gen_kwargs: dict, doc_id: int) -> str:
        dropped = clean_gen_kwargs(gen_kwargs).dropped
        if dropped and doc_id == 0:
            logger.debug(f"genhancer_llava: gen_kwargs not passed to generate: {dropped}")
        answer = self.runner.answer(images, text, gen_kwargs)
        if doc_id % 100 == 0:
            logger.debug(f"genhancer_llava doc {doc_id}: {text!r} -> {answer!r}")
        return answer

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out = []
        for request in tqdm(requests, disable=self.rank != 0, desc="genhancer_llava"):
            images, text, gen_kwargs = self._inputs(request.args)
            out.append(self._answer(images, text, gen_kwargs, request.args[3]))
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "genhancer_llava scores generation tasks (mmvp, cv_bench, pope, ...); "
            "loglikelihood (multiple_choice output_type) tasks are not supported"
        )

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("genhancer_llava does not run multi-round tasks")


class GenhancerLlavaChat(GenhancerLlava):
    """Chat mode: requests carry (context, doc_to_messages, gen_kwargs, doc_id, task, split).

    The messages' images (in order) and the user turns' text (joined by newlines) make one
    LLaVA-1.5 user turn; system and assistant turns are not used.
    """

    is_simple = False

    def _inputs(self, args: tuple) -> tuple[list, str, dict]:
        from lmms_eval.protocol import ChatMessages

        _, doc_to_messages, gen_kwargs, doc_id, task, split = args
        messages = ChatMessages(messages=doc_to_messages(self._doc(task, split, doc_id)))
        images, _, _ = messages.extract_media()
        texts = [
            c.text
            for m in messages.messages
            if m.role == "user"
            for c in m.content
            if c.type == "text"
        ]
        return _flatten(images), "\n".join(texts).replace("<image>", "").strip(), gen_kwargs
