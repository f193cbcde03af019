"""Deployment bundles: one artifact (a tar archive or a folder) holding an export's model, tokenizer, chat
template, generation defaults, a manifest (checksums, required runtime versions, IO, memory needs) and a
README for the device; checked before it is unpacked or run (see unpack.py for the archive rules)."""

from .checks import check_folder
from .pack import is_tar_name, make_bundle
from .requirements import check_requirements
from .unpack import unpack_bundle
from .verify import verify_bundle

__all__ = ["make_bundle", "unpack_bundle", "verify_bundle", "check_folder", "check_requirements",
           "is_tar_name"]
