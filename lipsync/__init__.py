"""lipsync"""
