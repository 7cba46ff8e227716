"""One `eval-coco --workers` process: `python -m mspn_cli.cli.eval_worker JOB.json`.

Runs the shard the job names and exits with the usual codes (0 done, 1 some images
missing, 130/143 interrupted with the checkpoint kept, else the error's code); one
line on stderr, which the parent keeps in the shard's log.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from mspn_cli.errors import EXIT_INTERNAL, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, MspnError, interrupt_exit_code


def main(argv: Optional[List[str]] = None) -> int:
    from mspn_cli.cli.common import fail, install_stop_signals
    from mspn_cli.evaluation.job import EvalJob, prepare_eval
    from mspn_cli.io.jsonio import read_json_file

    install_stop_signals()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        fail("usage: python -m mspn_cli.cli.eval_worker JOB.json")
        return EXIT_USAGE
    try:
        job = EvalJob.from_dict(read_json_file(argv[0], "evaluation job"))
        run = prepare_eval(job).run()
    except MspnError as exc:
        fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        fail("interrupted; finished images are kept in the checkpoint")
        return interrupt_exit_code(exc)
    except Exception as exc:  # noqa: BLE001 - exit 1 would read as "some images missing"
        fail(f"internal error ({type(exc).__name__}: {exc})")
        return EXIT_INTERNAL
    print(f"shard {run.shard}: {len(run.records)} instance(s) from {len(run.image_ids)} image(s)", file=sys.stderr)
    return EXIT_PARTIAL if run.missing_images else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
