"""lipsync/latentsync"""
