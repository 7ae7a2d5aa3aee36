"""visdom without internet: its web page's front-end files, from the npm registry.

``python -m visdom.server`` downloads about twenty JavaScript, CSS and font files from CDNs
(unpkg, cdn.plot.ly, d3js.org, cdnjs) on first start; without internet the page stays blank. Every
one of them is an npm package, so this fetches the same versions with ``npm pack`` and puts them
where visdom looks, then marks visdom's static folder built so the server skips its downloads::

    python -m memfn.tasks.visdom_assets          # once (needs node's npm)
    python -m visdom.server                      # as pytorch-dnc's README says

``--serve`` does both, passing any further options to the server.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: npm package -> {path inside the package: path under visdom's ``static/``}: the files visdom's
#: ``download_scripts`` fetches, at the versions it names.
ASSETS: dict[str, dict[str, str]] = {
    "jquery@3.1.1": {"dist/jquery.min.js": "js/jquery.min.js"},
    "bootstrap@3.3.7": {
        "dist/js/bootstrap.min.js": "js/bootstrap.min.js",
        "dist/css/bootstrap.min.css": "css/bootstrap.min.css",
        **{
            f"dist/fonts/glyphicons-halflings-regular.{ext}": f"fonts/glyphicons-halflings-regular.{ext}"
            for ext in ("eot", "woff2", "woff", "ttf", "svg")
        },
    },  # fmt: skip
    "react@16.2.0": {"umd/react.production.min.js": "js/react-react.min.js"},
    "react-dom@16.2.0": {"umd/react-dom.production.min.js": "js/react-dom.min.js"},
    "react-modal@3.1.10": {"dist/react-modal.min.js": "js/react-modal.min.js"},
    "plotly.js-dist-min@2.11.1": {"plotly.min.js": "js/plotly-plotly.min.js"},
    "sjcl@1.0.7": {"sjcl.js": "js/sjcl.js"},
    "layout-bin-packer@1.4.0": {
        "dist/layout-bin-packer.js": "js/layout_bin_packer.js",
        "dist/layout-bin-packer.js.map": "js/layout-bin-packer.js.map",
    },
    "d3@3.5.17": {"d3.min.js": "js/d3.v3.min.js"},
    "d3-selection-multi@1.0.1": {"build/d3-selection-multi.js": "js/d3-selection-multi.v1.js"},
    "save-svg-as-png@1.4.17": {"lib/saveSvgAsPng.js": "js/saveSvgAsPng.js"},
    "react-resizable@1.4.6": {"css/styles.css": "css/react-resizable-styles.css"},
    "react-grid-layout@0.16.3": {"css/styles.css": "css/react-grid-layout-styles.css"},
    "classnames@2.2.5": {"index.js": "fonts/classnames"},
    "mathjax@2.7.5": {
        p: f"js/mathjax/2.7.5/{p}"
        for p in (
            "MathJax.js",
            "config/Safe.js",
            "config/TeX-AMS-MML_HTMLorMML.js",
            "extensions/Safe.js",
            "jax/output/SVG/fonts/TeX/fontdata.js",
            "jax/output/SVG/jax.js",
            "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js",
            "jax/output/SVG/config.js",
        )
    },  # fmt: skip
}


def static_folder() -> Path:
    """visdom's ``static/`` folder (where its server serves the page's files from)."""
    try:
        import visdom
    except ImportError:
        raise SystemExit('visdom is not installed: pip install -e ".[visdom]" (see the README)') from None
    return Path(visdom.__file__).parent / "static"


def missing(static: Path) -> list[str]:
    """The front-end files not yet in ``static``."""
    return [target for files in ASSETS.values() for target in files.values() if not (static / target).is_file()]


def install(static: Path | None = None, npm: str = "npm") -> Path:
    """Put every front-end file in visdom's static folder (those already there are kept) and mark it
    built for this visdom version, so ``visdom.server`` downloads nothing. Returns the folder."""
    static = static or static_folder()
    if shutil.which(npm) is None:
        raise SystemExit(f"{npm} not found: install node's npm (e.g. apt-get install npm), or start visdom online")
    with tempfile.TemporaryDirectory() as tmp:
        for package, files in ASSETS.items():
            if all((static / target).is_file() for target in files.values()):
                continue
            done = subprocess.run([npm, "pack", "--silent", package], cwd=tmp, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"npm pack {package} failed: {done.stderr.strip()[-300:]}")
            with tarfile.open(Path(tmp) / done.stdout.strip().splitlines()[-1]) as archive:
                for source, target in files.items():
                    member = archive.extractfile(f"package/{source}")
                    if member is None:
                        raise SystemExit(f"{package} has no {source}")
                    (static / target).parent.mkdir(parents=True, exist_ok=True)
                    (static / target).write_bytes(member.read())
    import visdom

    (static / "version.built").write_text(visdom.__version__)  # type: ignore[attr-defined]  # visdom stub gap
    return static


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memfn.tasks.visdom_assets", description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="then start visdom.server (other options go to it)")
    args, server_args = parser.parse_known_args(argv)
    static = install()
    print(f"visdom front-end files in place: {static}")
    if args.serve:
        from visdom.server.run_server import main as serve

        sys.argv = [sys.argv[0], *server_args]
        serve()  # type: ignore[no-untyped-call]  # visdom is untyped
    return 0


if __name__ == "__main__":
    sys.exit(main())
