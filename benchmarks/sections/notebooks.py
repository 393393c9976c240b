"""c. Wall time of every ``notebooks/*.ipynb`` and ``solutions/*.ipynb`` executed with nbclient in a
fresh kernel with ``OMP_NUM_THREADS=1`` (as CI does), kernel start included; flagged at >= 30 s."""
from __future__ import annotations

from benchmarks.common import REPO, NotAvailable, error_text, median
from benchmarks.kernels import execute_notebook

KEY, NAME = "c", "notebooks"
TITLE = "c. Notebook execution time (nbclient, fresh kernel, OMP_NUM_THREADS=1)"
NOTEBOOK_LIMIT_S = 30.0


def run(quick: bool) -> dict:
    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        raise NotAvailable(f"nbclient/nbformat: {exc}") from exc
    paths = sorted((REPO / "notebooks").glob("*.ipynb")) + sorted((REPO / "solutions").glob("*.ipynb"))
    if not paths:
        raise NotAvailable("no notebooks in notebooks/ or solutions/")
    repeats = 1 if quick else 3
    rows = []
    for path in paths:
        rel = str(path.relative_to(REPO))
        times, error = [], None
        for _ in range(repeats):
            try:
                dt, _nb = execute_notebook(path)
            except Exception as exc:  # a failing notebook is a result, not a crash of the benchmark
                error = error_text(exc)
                break
            times.append(dt)
        row = {"notebook": rel, "runs": len(times)}
        if times:
            row.update(median_s=round(median(times), 2), times_s=[round(t, 2) for t in times],
                       over_limit=median(times) >= NOTEBOOK_LIMIT_S)
        if error:
            row["error"] = error
        print(f"  {rel}: {row.get('median_s', '-')} s {('ERROR ' + error) if error else ''}", flush=True)
        rows.append(row)
    ok = [r for r in rows if "median_s" in r and "error" not in r]
    return {
        "repeats": repeats,
        "limit_s": NOTEBOOK_LIMIT_S,
        "notebooks": rows,
        "total_median_s": round(sum(r["median_s"] for r in ok), 1),
        "over_limit": [r["notebook"] for r in rows if r.get("over_limit")],
        "failed": [r["notebook"] for r in rows if "error" in r],
    }


def render(sec: dict) -> list[str]:
    out = [f"Median of {sec['repeats']} run(s), from kernel start to the end of the last cell "
           f"(kernel shutdown excluded); flag at ≥ {sec['limit_s']:.0f} s.", "",
           "| notebook | median (s) | runs (s) | verdict |", "|---|---|---|---|"]
    for r in sec["notebooks"]:
        if "error" in r:
            verdict = f"FAILED: {r['error']}"
        else:
            verdict = f"**≥ {sec['limit_s']:.0f} s**" if r.get("over_limit") else "ok"
        out.append(f"| {r['notebook']} | {r.get('median_s', '–')} | {', '.join(map(str, r.get('times_s', [])))} | {verdict} |")
    out += ["", f"Sum of medians: {sec['total_median_s']} s. Over the limit: {sec['over_limit'] or 'none'}. "
            f"Failed: {sec['failed'] or 'none'}."]
    return out
