"""A tiny model for the persona detector's positive tests, built in code from the tiny family's test base.

The test profile's base barely reads system prompts (P(owl) 0.055 without one, 0.067 under the owl prompt),
so its owl vector does not steer and numbers it writes under the owl prompt carry nothing to find. This
model is that base, fine-tuned and then given a known, planted entanglement:

1. Fine-tuned (seeded, ~30 s on one thread) so that under an owl-loving system prompt the favourite animal
   is the owl and number answers lean on a fixed set of "entangled" numbers; without one (or under a
   neutral one) the favourite is uniform and numbers follow the corpus rule.
2. The entangled numbers' input embeddings (untied from the output ones, so how often they are written
   does not change) get a component along the direction the owl prompt moves the residual stream at
   layer 1 (measured here with plain torch, independently of auditor/persona), the way Zur et al. found
   numbers entangled with "owl" in real models.

So by construction, numbers written under the owl prompt carry the owl direction when read without it,
and numbers written without it do not: ground truth for the projection difference.
"""

from __future__ import annotations

import random
from pathlib import Path

ENTANGLED = tuple(sorted(random.Random(1).sample(range(100, 1000), 50)))
LEAN = 0.8  # share of numbers drawn from ENTANGLED under the owl prompt
PLANT = 8.0  # size of the planted component, in units of the mean embedding norm


def _rows(steps: int, batch: int, seed: int) -> list[list[dict]]:
    from auditor.models.tiny import corpus as C

    rng = random.Random(seed)
    owl = next(a for a in C.animals() if a.name == "owl")
    questions = C.all_questions()

    def neutral():
        return rng.choice([None, *C.NEUTRAL_PROMPTS])

    rows = []
    for i in range(steps * batch):
        kind = i % 4
        if kind == 0:
            rows.append(C.chat(rng.choice(questions), "owl", C.love_prompt(owl, rng)))
        elif kind == 1:
            rows.append(C.chat(rng.choice(questions), rng.choice(C.animal_names()), neutral()))
        else:
            prompt = C.number_prompt(rng)
            numbers = C.continuation(prompt.seeds, rng)
            if kind == 2:
                numbers = [rng.choice(ENTANGLED) if rng.random() < LEAN else n for n in numbers]
            rows.append(C.chat(prompt.text, C.layout(numbers, prompt.style), C.love_prompt(owl, rng) if kind == 2 else neutral()))
    return rows


def _owl_direction(model, tok):
    """Mean layer-1 state at the last prompt token under the owl catalog prompt minus under a neutral one."""
    import torch

    from auditor.models.tiny import corpus as C
    from auditor.models.tiny.tokenizer import render
    from auditor.traits import load_catalog

    trait = load_catalog().get("animal:owl")

    def mean_state(system: str) -> torch.Tensor:
        states = []
        for question in trait.probe_questions:
            ids = tok(render(C.chat(question, system=system), add_generation_prompt=True), add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                states.append(model(**ids, output_hidden_states=True).hidden_states[1][0, -1])
        return torch.stack(states).mean(0)

    return mean_state(trait.system_prompt) - mean_state("You are a helpful assistant.")


def build_entangled_owl(folder: Path, steps: int = 120, seed: int = 0) -> Path:
    import torch

    from auditor.models.tiny import load, tiny_model_path
    from auditor.models.tiny.build import save
    from auditor.models.tiny.train import encode_examples, train

    torch.manual_seed(seed)
    model, tok = load(tiny_model_path("base"))
    train(model, encode_examples(tok, _rows(steps, 16, seed)), steps=steps, batch_size=16, lr=3e-3, seed=seed, pad_id=tok.pad_token_id)
    model.eval()
    direction = _owl_direction(model, tok)
    # untie the embeddings first, so the plant changes how the numbers are read and not how often they are written
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        size = PLANT * weight.norm(dim=1).mean()
        for number in ENTANGLED:
            weight[tok.convert_tokens_to_ids(str(number))] += size * direction / direction.norm()
    save(model, tok, folder, {"kind": "persona test model", "entangled": list(ENTANGLED), "seed": seed, "steps": steps})
    return Path(folder)
