"""The Hugging Face Hub on top of the adapter folder: resolve a repository id to a local folder, upload a folder.

A Hub repository holds exactly what `save_pretrained` writes. Loading downloads only those files
(`snapshot_download` with `allow_patterns`) into the usual Hugging Face cache and then reads the cached snapshot
with every check a local folder gets.
"""

from __future__ import annotations

import os
from pathlib import Path

from .constants import ADAPTER_FILES, is_hub_id


def resolve_adapter_source(
    source: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> tuple[Path, Path | None]:
    """Finds the folder to read for an adapter given as a local folder or a Hub repository id.

    An existing local path always wins; otherwise a Hub id (`user/repo`) is downloaded (or taken from the cache;
    `HF_HUB_OFFLINE=1` or `local_files_only=True` never use the network).

    Args:
        source: a folder written by `save_pretrained`, or a Hub repository id.
        revision: branch, tag or commit of the Hub repository.
        token: Hub token for private repositories (`None`: the saved login).
        cache_dir: Hugging Face cache folder (default: `HF_HUB_CACHE`).
        local_files_only: use the cache only.

    Returns:
        `(folder, root)`: the folder to read and the folder its symlinks may point into (the cached repository,
        whose snapshot files link to its `blobs/`), or `None` for a local folder (links must stay inside it).
    """
    path = Path(source).expanduser()
    if isinstance(source, os.PathLike) or path.exists() or not is_hub_id(str(source)):
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} only applies to Hub repository ids; {str(source)!r} is a local path."
            )
        return path, None
    from huggingface_hub import constants, snapshot_download

    from . import __version__

    # Offline, read the cache only: huggingface_hub 1.33 (with transformers 5.17) otherwise asks the Hub for the file
    # list of a commit revision and raises OfflineModeIsEnabled although the snapshot is cached.
    offline = getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)()

    snapshot = Path(
        snapshot_download(
            str(source),
            repo_type="model",
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only or offline,
            allow_patterns=list(ADAPTER_FILES),
            library_name="labeltok-peft",
            library_version=__version__,
        )
    )
    root = snapshot.parent.parent if snapshot.parent.name == "snapshots" else None
    return snapshot, root


def upload_adapter_folder(
    folder: str | os.PathLike,
    repo_id: str,
    commit_message: str,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
):
    """Creates the model repository if needed and uploads a saved adapter folder; returns the `CommitInfo`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision, commit_message=commit_message
    )
