"""Sends a checkout, an add-to-cart and a page visit through Pinterest's official Python SDK
(`pinterest-api-sdk` from PyPI), unchanged, to the base URL given, and prints what the SDK
parsed of the answer as JSON.

Usage: python sdk_send.py BASE_URL ACCESS_TOKEN AD_ACCOUNT_ID EVENT_ID_PREFIX
"""
import json
import os
import sys
import time

base, token, account, prefix = sys.argv[1:5]
# The SDK reads its base URL from the environment when it is imported.
os.environ["PINTEREST_API_URI"] = base

from pinterest.ads.conversion_events import Conversion  # noqa: E402
from pinterest.client import PinterestSDKClient  # noqa: E402

client = PinterestSDKClient.create_client_with_token(token)
now = int(time.time())
user = {
    "em": ["Buyer.One@Example.com"],
    "client_ip_address": "203.0.113.9",
    "client_user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X)",
}
events = [
    Conversion.create_conversion_event(
        event_name="checkout",
        action_source="web",
        event_time=now,
        event_id=f"{prefix}-checkout",
        user_data=user,
        custom_data={"currency": "USD", "value": "72.39", "content_ids": ["8001"],
                     "num_items": 2, "order_id": f"{prefix}-order"},
        event_source_url="https://shop.example/checkout",
    ),
    Conversion.create_conversion_event(
        event_name="add_to_cart",
        action_source="web",
        event_time=now,
        event_id=f"{prefix}-cart",
        user_data=user,
        custom_data={"currency": "USD", "value": "36.00", "content_ids": ["8001"]},
    ),
    Conversion.create_conversion_event(
        event_name="page_visit",
        action_source="web",
        event_time=now,
        event_id=f"{prefix}-visit",
        user_data=user,
        custom_data={},
    ),
]
response = Conversion.send_conversion_events(
    ad_account_id=account,
    conversion_events=events,
    test=False,
    client=client,
)
print(json.dumps({
    "num_events_received": response.num_events_received,
    "num_events_processed": response.num_events_processed,
    "statuses": [e.status for e in response.events],
}))
