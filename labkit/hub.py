"""The Hugging Face hub, asked with one deadline.

Before a download, ``hub_problem`` makes one HTTPS request to the endpoint's model API under one
overall deadline (DNS, connect, TLS and first byte together), so an endpoint that accepts TCP but
never answers TLS, a broken certificate, or a missing model each fail within seconds with one
message, instead of hanging or retrying for most of a minute and then blaming config.json.

The README's "Using a GPU and a hub model" says how to fetch a hub model where there is a network.

Explained in: book/part2-diffusion/03_diffusion.ipynb (load_model)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

HUB_DEADLINE_S = 5.0  # one overall deadline for the hub's first answer


def hub_problem(repo_id: str, deadline: float = HUB_DEADLINE_S) -> str | None:
    """Why the hub cannot serve ``repo_id`` now, or None if it answers. One HTTPS request to the
    endpoint's model API, run under one overall deadline (DNS, connect, TLS and first byte), so a
    server that accepts TCP but never answers TLS cannot hang us."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = f"{constants.ENDPOINT.rstrip('/')}/api/models/{repo_id}"

    def ask() -> int:
        # its own timeout, a little past the deadline, ends the request if it is still stuck by then
        return get_session().get(url, timeout=deadline + 1, follow_redirects=True).status_code

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        status = pool.submit(ask).result(timeout=deadline)
    except FutureTimeout:
        return f"{constants.ENDPOINT} did not answer within {deadline:g} s (connect, TLS and first byte)"
    except Exception as err:  # noqa: BLE001  any transport failure (DNS, refused, TLS, certificate): unreachable
        return f"{constants.ENDPOINT} is unreachable: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    finally:
        pool.shutdown(wait=False)  # a request past its deadline ends by its own timeout
    if status in (401, 403, 404):
        return f"{constants.ENDPOINT} has no public model {repo_id!r} (HTTP {status}); check the id"
    if status >= 400:
        return f"{constants.ENDPOINT} answered HTTP {status} for {repo_id!r}"
    return None
