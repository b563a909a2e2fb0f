"""The size of a Snakemake report and what it is made of: the embedded files per category, and
the rest (the viewer's libraries, the rule graph, the rules' code).

    python -m hmf.report.size report.html
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

_DATA = {name: re.compile(rf"var {name} = (\{{.*?\}});\s*</script>", re.S) for name in ("results", "categories")}


@dataclass(frozen=True)
class ReportSize:
    total: int  # bytes of the HTML file
    categories: dict[str, tuple[int, int]]  # category -> (files, bytes embedded)

    @property
    def rest(self) -> int:
        return self.total - sum(size for _, size in self.categories.values())


def _embedded(html: str, name: str, path: Path) -> dict:
    match = _DATA[name].search(html)
    if not match:
        raise ValueError(f"{path} is not a Snakemake report: no '{name}' data in it")
    return json.loads(match.group(1))


def report_size(path: str | os.PathLike) -> ReportSize:
    """Total size of the report at ``path`` and the bytes its embedded files take per category."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report {path} does not exist")
    html = path.read_text(encoding="utf-8")
    results, categories = _embedded(html, "results", path), _embedded(html, "categories", path)
    sizes = {}
    for category, subcategories in categories.items():
        keys = [key for keys in subcategories.values() for key in keys]
        sizes[category] = (len(keys), sum(len(results[key].get("data_uri", "")) for key in keys if key in results))
    return ReportSize(path.stat().st_size, dict(sorted(sizes.items(), key=lambda item: -item[1][1])))


def describe(path: str | os.PathLike) -> str:
    size = report_size(path)
    lines = [f"{path}: {size.total / 1e6:.1f} MB"]
    width = max([len(c) for c in size.categories] + [40])
    for category, (files, nbytes) in size.categories.items():
        lines.append(f"  {category:<{width}} {files:>5} files {nbytes / 1e6:8.1f} MB")
    lines.append(f"  {'viewer, rule graph, code and config':<{width}} {'':>11} {size.rest / 1e6:8.1f} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hmf.report.size REPORT.html", file=sys.stderr)
        return 2
    try:
        print(describe(args[0]))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
