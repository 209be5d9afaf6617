"""The webhooks API: serializers, views, URLs."""
