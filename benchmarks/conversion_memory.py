"""Where the generated conversion script's memory goes: peak RSS per phase.

Runs a generated package's `convert()` in this process and resets the kernel's peak-RSS mark
(`VmHWM`, through `/proc/self/clear_refs`) at the start of each phase, so each phase's peak is
its own: importing keras_hub, building the tokenizer and the model, reading the checkpoint,
initializing the variables, compiling, writing the weights (`save_to_preset`'s h5 file) and the
rest of the preset. Linux only.

    KERAS_BACKEND=torch python benchmarks/conversion_memory.py PORT_OUT NAME CHECKPOINT PRESET \
        [--in-memory]

PORT_OUT is the `--out` of `hf2kh port` (it holds the package NAME); PRESET is written. The
script's default path streams (variables without values, each tensor read as the weights are
written: "initialize variables" is then empty and the reads happen while saving); `--in-memory`
measures the path that initializes every variable first.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")


def status() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process, in MiB."""
    fields = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    with open("/proc/self/status") as f:
        return {
            line.split(":")[0]: int(line.split()[1]) / 1024 for line in f if line.startswith(fields)
        }


class Phases:
    """Phase marks: each closes the running phase (its peak, RSS at its end, seconds)."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, float, float]] = []
        self.label, self.start = None, 0.0

    def mark(self, label: str | None) -> None:
        now = status()
        if self.label is not None:
            elapsed = time.perf_counter() - self.start
            self.rows.append((self.label, now["VmHWM"], now["VmRSS"], now["RssFile"], elapsed))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        self.label, self.start = label, time.perf_counter()

    def around(self, owner, attribute: str, label: str, after: str | None = None) -> None:
        """Mark `label` when `owner.attribute` is called (and `after` when it returns)."""
        original = getattr(owner, attribute)

        def marked(*args, **kwargs):
            self.mark(label)
            result = original(*args, **kwargs)
            if after:
                self.mark(after)
            return result

        setattr(owner, attribute, marked)

    def table(self) -> str:
        base = self.rows[0][1]
        lines = [
            "| phase | peak RSS, MiB | above `import keras_hub` | RSS at its end "
            "| of it file-backed | s |",
            "|---|---|---|---|---|---|",
        ]
        for label, peak, end, file_backed, seconds in self.rows:
            lines.append(
                f"| {label} | {peak:.0f} | {peak - base:+.0f} | {end:.0f} | {file_backed:.0f} "
                f"| {seconds:.1f} |"
            )
        top = max(row[1] for row in self.rows)
        lines.append(f"\npeak {top:.0f} MiB, {top - base:.0f} MiB above `import keras_hub`")
        return "\n".join(lines)


def main() -> None:
    port_out, name, checkpoint, preset = sys.argv[1:5]
    stream = "--in-memory" not in sys.argv[5:]
    sys.path.insert(0, port_out)
    phases = Phases()
    phases.mark("import keras_hub")
    import keras_hub  # noqa: F401

    phases.mark("import the script")
    script = importlib.import_module(f"{name}.convert_{name}_checkpoints")
    package = script.package_classes()
    phases.around(script, "load_tokenizer", "build the tokenizer", after="build the model")
    phases.around(script, "checkpoint_values", "read the checkpoint", after="initialize variables")
    for class_name in dir(package):
        cls = getattr(package, class_name)
        if not isinstance(cls, type):
            continue
        if class_name.endswith("Backbone"):
            phases.around(cls, "save_to_preset", "save: weights (h5)", after="save: the rest")
        elif class_name.endswith(("CausalLM", "MaskedLM", "Classifier")):
            phases.around(cls, "compile", "compile the task")
            phases.around(cls, "save_to_preset", "save: task config")
    script.convert(checkpoint, preset, stream=stream)
    phases.mark(None)
    print(phases.table())


if __name__ == "__main__":
    main()
