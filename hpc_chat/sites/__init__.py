"""Site profiles: YAML -> validated schema -> Parsl Config, dry-run rendering, driver jobs."""

from hpc_chat.sites.registry import all_profiles, find_profile, load_profile
from hpc_chat.sites.schema import SiteProfile

__all__ = ["SiteProfile", "all_profiles", "find_profile", "load_profile"]
