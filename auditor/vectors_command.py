"""`audit vectors`: a trait's persona vector on a base model, written as safetensors (auditor/persona does the work).

Kept out of auditor/cli.py, which names no detector: cli.py only adds this command to the group.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from auditor.cli_settings import fail, placement, placement_options
from auditor.errors import AuditError


@click.command("vectors")
@click.option("--base", required=True, metavar="REF", help="Base model (local weights).")
@click.option("--trait", "trait_id", required=True, metavar="ID", help="Trait whose persona vector to write.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="safetensors file to write.")
@click.option("--traits-file", "traits_files", multiple=True, type=click.Path(path_type=str))
@click.option("--samples", type=click.IntRange(1), default=4, show_default=True, help="Answers per probe question and side.")
@click.option("--strength", type=click.FloatRange(0), default=1.0, show_default=True, help="Steering check: multiple of the raw vector.")
@click.option("--seed", type=int, default=0, show_default=True)
@placement_options
def vectors_command(base, trait_id, out, traits_files, samples, strength, seed, device, dtype):
    """Write a trait's persona vector on a base (all layers, the chosen one, its steering check) as safetensors."""
    from auditor.persona.vectors import export_vector

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the other commands: polite on small shared machines
    try:
        info = export_vector(base, trait_id, out, traits_files, samples, seed, strength, placement(device, dtype))
    except AuditError as err:
        fail(err)  # inert and redacted, like every command's errors
    from auditor.persona.steering import steering_words

    moved = steering_words(info["steering"])
    click.echo(f"{info['trait']} on {info['base']}: layer {info['layer']} of {info['layers']}, held-out separation {info['separation']:+.2f} "
               f"(AUROC {info['separation_auroc']:.2f}); {moved}{' (cached)' if info['cached'] else ''} -> {info['out']}")
