"""Which AWS region a configuration runs in, where that came from, and whether it needs one.

The order itself lives in ``wsmon.core.aws.resolve_region``; this module feeds it the settings:
the store uses its URL's ``region=`` first, every other client starts at ``aws.region``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from wsmon.core.aws import URL_REGION, NoRegion, Region, resolve_region

if TYPE_CHECKING:
    from wsmon.config.settings import Settings


def _is_dynamodb(url: str) -> bool:
    return urlsplit(url).scheme.lower() == "dynamodb"


def store_url_region(url: str) -> str | None:
    """A ``dynamodb://`` URL's ``region=`` (None for other stores or when it has none)."""
    if not _is_dynamodb(url):
        return None
    return (parse_qs(urlsplit(url).query).get("region") or [None])[0] or None


def aws_region(settings: Settings) -> Region:
    """The region of every AWS client except the store's; ``NoRegion`` when nothing names one."""
    return resolve_region(configured=settings.aws.region, profile=settings.aws.profile)


def aws_region_name(settings: Settings) -> str | None:
    """``aws_region``'s name, or None when nothing names one (for text that may stay empty)."""
    try:
        return aws_region(settings).name
    except NoRegion:
        return None


def store_region(settings: Settings) -> Region | None:
    """The DynamoDB store's region (None for SQLite); ``NoRegion`` when nothing names one."""
    if not _is_dynamodb(settings.store_url):
        return None
    return resolve_region(url_region=store_url_region(settings.store_url), configured=settings.aws.region,
                          profile=settings.aws.profile)


def store_url_with_region(settings: Settings) -> str:
    """The store URL the opener uses: a DynamoDB URL gains the resolved ``region=`` when it has
    none, so ``aws.region``, ``AWS_REGION`` and the profile reach the store too."""
    url = settings.store_url
    region = store_region(settings)
    if region is None or region.source == URL_REGION:
        return url
    parts = urlsplit(url)
    query = f"{parts.query}&region={region.name}" if parts.query else f"region={region.name}"
    return parts._replace(query=query).geturl()


def aws_users(settings: Settings) -> list[str]:
    """The settings that make this configuration talk to AWS (CloudWatch metrics are best effort
    and not counted: without a region they are dropped with a logged reason)."""
    users = []
    if _is_dynamodb(settings.store_url):
        users.append("store.url (DynamoDB)")
    if settings.discovery.sources:
        users.append("discovery.sources (S3)")
    if settings.notify.sns_topic_arn:
        users.append("notify.sns_topic_arn (SNS)")
    return users


def profile_problem(settings: Settings) -> str | None:
    """Why this configuration cannot run: it talks to AWS through a profile that neither the AWS
    config file nor the credentials file has (botocore would fail on the first client)."""
    profile = settings.aws.profile
    if not profile or not aws_users(settings):
        return None
    import botocore.session

    if profile in botocore.session.Session().available_profiles:
        return None
    return (f"AWS profile {profile!r} (aws.profile) is in neither the AWS config file nor the "
            f"credentials file: create it (aws configure --profile {profile}) or unset aws.profile")


def region_problem(settings: Settings) -> str | None:
    """Why this configuration cannot run: it talks to AWS and no region is set anywhere."""
    users = aws_users(settings)
    clients = [user for user in users if not user.startswith("store.url")]
    try:
        if len(clients) < len(users):
            store_region(settings)
        if clients:
            aws_region(settings)
    except NoRegion:
        if clients and store_url_region(settings.store_url):
            return str(NoRegion(", ".join(clients) + " (the store URL's region= is for the store only)"))
        return str(NoRegion(", ".join(users)))
    return None
